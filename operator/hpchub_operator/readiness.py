"""What a launcher tells the operator: its job has started, its app listens, or it failed.

Slurm stays the authority. A start hint only makes the operator look at the job now instead
of at the next poll; a port report becomes Running only once Slurm's allocation names the
node (never the report) and an HTTP server answers there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aiohttp

from hpchub_api import constants as c
from hpchub_api.models import Target

from . import lifecycle
from .backends.base import BackendError, JobInfo
from .clusters import ClusterConfigError, ClusterRuntime
from .reconciler import Reconciler, Refused, RetryLater, owned
from .registry import ServerRecord, utcnow

log = logging.getLogger("hpchub.readiness")


@dataclass(frozen=True)
class ReadyReport:
    """What a launcher reported: a port, a failure, or that its job has just started."""

    port: int | None
    failure: str | None
    started: bool = False


def base_url(rec: ServerRecord) -> str:
    """The path the server is served under: the hub's prefix, else ``/``."""
    if rec.spec and rec.spec.hub:
        for var in rec.spec.hub.environment:
            if var.name == "JUPYTERHUB_SERVICE_PREFIX":
                return var.value if var.value.endswith("/") else var.value + "/"
    return "/"


class Readiness:
    """Turns launcher reports into status, through the reconciler's writes and listings."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.rc = reconciler
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=reconciler.settings.ready_check_timeout))

    async def close(self) -> None:
        await self._http.close()

    async def report(self, uid: str, report: ReadyReport) -> None:
        """A launcher reported: check the server answers on the job's node, then Running."""
        rc = self.rc
        rec = rc.registry.get(uid)
        if rec is None or rec.spec is None:
            return
        if report.started:
            await self.refresh(rec)
            return
        async with rec.lock:
            now = utcnow()
            if report.failure is not None:
                decision = lifecycle.start_failed(rec.status, report.failure, now)
                if decision.cancel and rec.status.job_id:
                    await rc.cancel_or_defer(rec, rec.status.job_id)
                await rc.write(rec, decision.status)
                return
            assert report.port is not None
            rt = await rc.clusters.get(rec.cluster)
            if rt is None:
                return
            if rec.status.job_id is None:  # reported before this operator adopted the job
                job = await rc.find_job(rt, rec)
                if job is None:
                    raise RetryLater("no Slurm job carries this server's tag", 2)
                await rc.write(rec, lifecycle.submitted(rec.status, job.job_id, now,
                                                        adopted=True))
            host = await self._job_host(rt, rec)
            url = f"http://{host}:{report.port}{base_url(rec)}"
            if not await self._answers(url):
                log.warning("%s/%s reported port %s but %s does not answer", rec.namespace,
                            rec.name, report.port, url)
                return
            await rc.write(rec, lifecycle.ready(rec.status, host, report.port, url, now))
            submitted = lifecycle.parse_iso(rec.status.submitted_at)
            if submitted is not None:
                rc.metrics.submit_to_running.labels(rt.name).observe(
                    (now - submitted).total_seconds())

    async def refresh(self, rec: ServerRecord) -> None:
        """The job says it has started: observe this server now, from a query of its job
        alone (small whatever the queue's size), instead of at the next poll. The hint alone
        changes nothing, and a job Slurm no longer shows is left to the poll. Backends
        without a single-job query share a listing."""
        # The job can start (and hint) before the submission's status write is done: that
        # write happens under the lock, so wait for it before reading the job id.
        async with rec.lock:
            job_id = rec.status.job_id
            if rec.spec is None or not job_id or rec.status.phase.final:
                return
            target = rec.spec.target
        rt = await self.rc.clusters.get(rec.cluster)
        if rt is None:
            return
        queried_at = utcnow()
        try:
            job = await self._job_now(rt, target, job_id)
        except (BackendError, ClusterConfigError, RetryLater, Refused) as exc:
            log.info("%s/%s: start hint not followed (%s); the poll will tell",
                     rec.namespace, rec.name, exc)
            return
        if job is not None and owned(job, rec):
            await self.rc.observe(rec, rt, job, queried_at)

    async def _job_now(self, rt: ClusterRuntime, target: Target, job_id: str
                       ) -> JobInfo | None:
        """One job as Slurm shows it now: a query of that job alone where the backend has
        one, else a listing that begins now (shared with every other caller). A job alone is
        kept with the last listing's jobs, so the port report that follows finds its node
        without asking again."""
        backend = rt.backend_for(target)
        if not backend.single_job_query:
            jobs = await self.rc.list_jobs(rt, target, newer_than=time.monotonic())
            return jobs.get(job_id)
        job = await backend.job(job_id, c.JOB_COMMENT_PREFIX)
        if job is not None:
            rt.last_jobs[job.job_id] = job
        return job

    async def _job_host(self, rt: ClusterRuntime, rec: ServerRecord) -> str:
        """The address of the job's batch node, from Slurm's allocation (or the login node
        the process was started on) — never from the report."""
        assert rec.spec is not None
        job = next((j for j in rt.last_jobs.values() if owned(j, rec) and j.nodes), None)
        if job is None:
            job = await self.rc.find_job(rt, rec)
        if (job is None or not job.first_node) and rec.status.job_id:
            # The listing at hand predates the job's start (the app runs, so Slurm has
            # allocated it by now): ask again rather than make the launcher back off.
            fresh = await self._job_now(rt, rec.spec.target, rec.status.job_id)
            job = fresh if fresh is not None and owned(fresh, rec) else job
        if job is None or not job.first_node:
            raise RetryLater("the job has no node allocated yet", 2)
        node = job.first_node
        if node not in rt.node_addresses:
            backend = rt.backend_for(rec.spec.target)
            rt.node_addresses[node] = await backend.node_address(node)
        return rt.node_addresses[node]

    async def _answers(self, url: str) -> bool:
        """True when an HTTP server answers at url + 'api' (any status below 500)."""
        for _ in range(3):
            try:
                async with self._http.get(url + "api", allow_redirects=False) as resp:
                    return resp.status < 500
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.5)
        return False
