"""Drive JupyterServers toward what their spec asks, using lifecycle decisions.

Every side effect goes through the KubeGateway (status, Events, Secrets) or a cluster's
SlurmBackend. Status writes are diffed: nothing is patched when nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import time
from typing import Any

from hpchub_api import constants as c
from hpchub_api.models import JupyterServerStatus, Phase, Target

from . import jobscript, lifecycle, policy
from .backends.base import (
    AccessRefused,
    JobInfo,
    JobState,
    SlurmRejected,
    SlurmUnavailable,
)
from .clusters import ClusterConfigError, ClusterDirectory, ClusterRuntime
from .events import EventLanes
from .kube import KubeGateway, SecretNotOwned
from .metrics import Metrics
from .registry import ServerRecord, ServerRegistry, utcnow
from .settings import OperatorSettings

log = logging.getLogger("hpchub.reconciler")

TOKEN_KEY = "token"  # noqa: S105 - a Secret key name, not a secret
CANCEL_RESEND_SECONDS = 30.0
"""A deleted server's job is cancelled once, then again only if it is still alive after
this long (scancel is idempotent; a burst of deletions must not resend it every second)."""
FINALIZE_WAIT_SECONDS = 30.0
"""How long a deletion waits in its handler for Slurm to end the job, looking once a
second, before it hands back to kopf (whose every retry writes the object: a webhook call
and a watch event, times every server of a mass deletion)."""
FINALIZE_RECHECK_SECONDS = 1.0


class RetryLater(Exception):
    """Transient condition: the handler should be retried after ``delay`` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Refused(Exception):
    """The request breaks cluster policy; the message names the fields."""


#: Status writes (patch + Event) in flight at once after one listing.
OBSERVE_CONCURRENCY = 16


def callback_token(key: bytes, uid: str) -> str:
    """The per-server readiness token: HMAC-SHA256 of the CR uid."""
    return hmac.new(key, uid.encode(), hashlib.sha256).hexdigest()


class Reconciler:
    """Submit, observe, stop and finalize JupyterServers."""

    def __init__(self, settings: OperatorSettings, kube: KubeGateway, metrics: Metrics,
                 clusters: ClusterDirectory, registry: ServerRegistry,
                 callback_key: bytes, callback_url: str) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self.clusters = clusters
        self.registry = registry
        self.callback_key = callback_key
        self.callback_url = callback_url
        self.started_at = time.monotonic()
        self.events = EventLanes(self._post_event, on_drop=metrics.events_dropped.inc)

    # ------------------------------------------------------------------ status writes

    async def write(self, rec: ServerRecord, new: JupyterServerStatus) -> None:
        """Patch the status if it changed; queue an Event when the phase changes (posted in
        the background: the caller, who may hold the server's lock, does not wait for it)."""
        new = new.model_copy(update={"observed_generation": rec.generation})
        old = rec.status
        patch = lifecycle.status_patch(old, new)
        if not patch:
            return
        await self.kube.patch_server_status(rec.namespace, rec.name, patch)
        rec.status = new
        if old.phase != new.phase:
            # Logged as soon as the status is written (the Event may take a while).
            log.info("%s/%s: %s -> %s (%s)", rec.namespace, rec.name, old.phase.value,
                     new.phase.value, new.reason)
            self.metrics.transitions.labels(rec.cluster, new.phase.value).inc()
            warn = new.phase in (Phase.FAILED, Phase.UNKNOWN)
            text = new.message or new.reason or new.phase.value
            self.events.submit(rec.ref(), new.phase.value, text, "Warning" if warn else "Normal")

    async def _post_event(self, obj: dict[str, Any], reason: str, message: str,
                          type_: str, at: dt.datetime) -> None:
        await self.kube.event(obj, reason, message, type_, at)

    # ------------------------------------------------------------------ start

    async def start(self, rec: ServerRecord) -> None:
        """Make sure exactly one Slurm job exists for this server (adopt, else submit)."""
        async with rec.lock:
            if rec.status.job_id or rec.status.phase.final or rec.deleting:
                return
            if rec.spec is None:
                await self.write(rec, lifecycle.rejected(rec.status, rec.spec_error or
                                                         "invalid spec", utcnow()))
                return
            if rec.spec.stop:
                await self.write(rec, lifecycle.stop_requested(rec.status, utcnow()).status)
                return
            try:
                rt = await self.clusters.get(rec.spec.cluster)
            except ClusterConfigError as exc:
                await self.write(rec, rec.status.model_copy(update={
                    "reason": "ClusterUnavailable",
                    "message": f"HPCCluster {rec.spec.cluster} cannot be used: {exc}"}))
                raise RetryLater(str(exc), 30) from exc
            if rt is None:
                await self.write(rec, rec.status.model_copy(update={
                    "reason": "ClusterNotFound",
                    "message": f"HPCCluster {rec.spec.cluster} does not exist"}))
                raise RetryLater(f"HPCCluster {rec.spec.cluster} does not exist", 10)
            problems = policy.violations(
                rec.spec, rt.spec, rt.name,
                self.registry.active_of_user(rt.name, rec.spec.user, exclude_uid=rec.uid))
            if problems:
                await self.write(rec, lifecycle.rejected(rec.status, "; ".join(problems),
                                                         utcnow()))
                return
            try:
                existing = await self.find_job(rt, rec)
            except RetryLater as exc:
                if not isinstance(exc.__cause__, AccessRefused):
                    raise
                await self.write(rec, lifecycle.rejected(rec.status, str(exc.__cause__),
                                                         utcnow()))
                return
            if existing is not None:
                await self.write(rec, lifecycle.submitted(rec.status, existing.job_id,
                                                          utcnow(), adopted=True))
                return
            await self._submit(rec, rt)

    async def find_job(self, rt: ClusterRuntime, rec: ServerRecord) -> JobInfo | None:
        """This server's job, from a listing recent enough to include every job this
        operator may have submitted for it (so adoption can never miss its own submit)."""
        assert rec.spec is not None
        newer_than = max(self.started_at, rec.submit_attempted_at)
        jobs = await self.list_jobs(rt, rec.spec.target, newer_than=newer_than)
        mine = [j for j in jobs.values() if owned(j, rec)]
        live = [j for j in mine if not j.state.finished]
        candidates = live or mine
        return candidates[-1] if candidates else None

    async def list_jobs(self, rt: ClusterRuntime, target: Target,
                        newer_than: float | None = None) -> dict[str, JobInfo]:
        """Every tagged job (or login-node process) of a target, from ONE listing that
        started after ``newer_than`` (monotonic; None: a new one). At most one listing per
        target is in flight: callers share it when it began late enough, else wait for it
        and share the next one; a recent enough finished one is reused. So a burst of
        creations, deletions, reports or start hints costs one Slurm query at a time, not
        one per server."""
        floor = time.monotonic() if newer_than is None else newer_than
        while True:
            done = rt.listings.get(target)
            if done is not None and done[0] >= floor:
                return done[1]
            running = rt.listing_tasks.get(target)
            if running is not None and not running[1].done():
                if running[0] >= floor:
                    return await asyncio.shield(running[1])
                # Began too early for this caller: let it finish, then share the next.
                with contextlib.suppress(Exception):
                    await asyncio.shield(running[1])
                continue
            began = time.monotonic()
            task = asyncio.ensure_future(self._fetch(rt, target, began))
            rt.listing_tasks[target] = (began, task)
            return await asyncio.shield(task)

    async def _fetch(self, rt: ClusterRuntime, target: Target, began: float
                     ) -> dict[str, JobInfo]:
        op = "jobs" if target == Target.SLURM else "processes"
        try:
            backend = rt.backend_for(target)
            jobs = await backend.jobs(c.JOB_COMMENT_PREFIX)
        except ClusterConfigError as exc:
            raise Refused(str(exc)) from exc
        except SlurmUnavailable as exc:
            self.metrics.slurm_errors.labels(rt.name, op, "unavailable").inc()
            what = "Slurm" if target == Target.SLURM else "the login nodes"
            raise RetryLater(f"{what} unreachable: {exc}", 10) from exc
        finally:
            self.metrics.slurm_latency.labels(rt.name, op).observe(time.monotonic() - began)
        if target == Target.SLURM:
            self.metrics.polls.labels(rt.name).inc()
        rt.listings[target] = (began, jobs)
        rt.last_jobs = {k: v for k, v in rt.last_jobs.items()
                        if _target_of(v) != target} | jobs
        return jobs

    async def _submit(self, rec: ServerRecord, rt: ClusterRuntime) -> None:
        assert rec.spec is not None
        try:
            env, token_secret = await self._job_environment(rec, rt)
        except (SecretNotOwned, KeyError) as exc:
            await self.write(rec, lifecycle.rejected(rec.status, str(exc).strip("'\""),
                                                     utcnow()))
            return
        request = jobscript.build_request(rec.spec, rt.spec, rec.uid, rec.name, env)
        began = rec.submit_attempted_at = time.monotonic()
        try:
            job_id = await rt.backend_for(rec.spec.target).submit(request)
        except SlurmRejected as exc:
            self.metrics.slurm_errors.labels(rt.name, "submit", "rejected").inc()
            await self.write(rec, lifecycle.rejected(rec.status, f"Slurm refused the job: "
                                                     f"{exc}", utcnow()))
            return
        except SlurmUnavailable as exc:
            self.metrics.slurm_errors.labels(rt.name, "submit", "unavailable").inc()
            raise RetryLater(f"Slurm unreachable, will submit later: {exc}", 10) from exc
        finally:
            self.metrics.slurm_latency.labels(rt.name, "submit").observe(
                time.monotonic() - began)
        status = lifecycle.submitted(rec.status, job_id, utcnow())
        log_file = (jobscript.log_file(rt.spec, request.name, job_id)
                    if rec.spec.target == Target.SLURM else None)
        await self.write(rec, status.model_copy(update={"token_secret": token_secret,
                                                        "log_file": log_file}))
        rt.submitted.set()

    async def _job_environment(self, rec: ServerRecord, rt: ClusterRuntime
                               ) -> tuple[dict[str, str], str | None]:
        """Variables for the job only (the launcher's settings and the user's own tokens),
        and the name of the Secret holding a standalone server's token."""
        assert rec.spec is not None
        spec = rec.spec
        launcher = rt.spec.launcher
        env = {
            "HPCHUB_SERVER_UID": rec.uid,
            "HPCHUB_CALLBACK_URL": rt.spec.callback_url or self.callback_url,
            "HPCHUB_CALLBACK_TOKEN": callback_token(self.callback_key, rec.uid),
            "HPCHUB_APP": spec.app,
            "HPCHUB_PORT_MIN": str(launcher.port_range.min),
            "HPCHUB_PORT_MAX": str(launcher.port_range.max),
            "HPCHUB_START_TIMEOUT": str(launcher.start_timeout_seconds),
            "HPCHUB_ISOLATION": rt.spec.isolation.value,
        }
        for var in spec.environment.variables:
            env[var.name] = var.value
        if spec.hub is not None:
            for hub_var in spec.hub.environment:
                env[hub_var.name] = hub_var.value
            token = await self.kube.secret_value(rec.namespace, spec.hub.token_secret,
                                                 TOKEN_KEY)
            env["JUPYTERHUB_API_TOKEN"] = token.decode()
            env["JPY_API_TOKEN"] = token.decode()
            if "JUPYTERHUB_SERVICE_PREFIX" in env:
                env["HPCHUB_BASE_URL"] = env["JUPYTERHUB_SERVICE_PREFIX"]
            return env, None
        name = f"{rec.name}-token"[:253]
        token = await self.kube.ensure_secret(
            rec.namespace, name, TOKEN_KEY, owner=rec.ref(),
            labels={c.LABEL_USER: spec.user, c.LABEL_COMPONENT: "server-token"})
        env["JUPYTER_TOKEN"] = token.decode()
        return env, name

    # ------------------------------------------------------------------ stop / delete

    async def stop(self, rec: ServerRecord, why: str = "Stop requested") -> None:
        """Cancel the job (if any) and say Stopping; the poller confirms Stopped."""
        async with rec.lock:
            decision = lifecycle.stop_requested(rec.status, utcnow(), why)
            if decision.cancel and rec.status.job_id:
                await self._cancel(rec, rec.status.job_id)
            await self.write(rec, decision.status)

    async def _cancel(self, rec: ServerRecord, job_id: str) -> None:
        rt = await self.clusters.get(rec.cluster)
        if rt is None or rec.spec is None:
            return
        try:
            await rt.backend_for(rec.spec.target).cancel(job_id, rec.spec.user)
        except SlurmUnavailable as exc:
            self.metrics.slurm_errors.labels(rt.name, "cancel", "unavailable").inc()
            raise RetryLater(f"Slurm unreachable, cannot cancel job {job_id} yet", 10) from exc
        rec.cancel_sent_at = time.monotonic()

    async def finalize(self, rec: ServerRecord) -> None:
        """On deletion: cancel, then return only once Slurm confirms the job is gone."""
        rec.deleting = True
        if rec.spec is None:
            self.registry.forget(rec.uid)
            return  # an invalid spec was never submitted
        try:
            rt = await self.clusters.get(rec.cluster)
        except ClusterConfigError as exc:
            rt, problem = None, str(exc)
        else:
            problem = f"HPCCluster {rec.cluster} does not exist"
        if rt is None:
            if rec.status.job_id is None:  # nothing was ever submitted for it
                self.registry.forget(rec.uid)
                return
            raise RetryLater(f"cannot confirm that job {rec.status.job_id} is gone: "
                             f"{problem}", 30)
        deadline = time.monotonic() + FINALIZE_WAIT_SECONDS
        looked = 0.0
        while (live := await self._end_for_deletion(rec, rt, looked)) is not None:
            if time.monotonic() >= deadline:
                raise RetryLater(f"waiting for Slurm to end job {live}", 1.0)
            looked = time.monotonic()
            await asyncio.sleep(FINALIZE_RECHECK_SECONDS)
        self.registry.forget(rec.uid)

    async def _end_for_deletion(self, rec: ServerRecord, rt: ClusterRuntime,
                                looked: float) -> str | None:
        """One look at Slurm for a deleted server, in a listing begun after ``looked``
        (monotonic) and after our last cancel: cancel its live job (again only after
        CANCEL_RESEND_SECONDS), say Stopping; the id of a job still alive, else None."""
        assert rec.spec is not None
        async with rec.lock:
            try:  # a listing shared with every other caller (the poller's, often)
                newer = max(self.started_at, rec.submit_attempted_at, rec.cancel_sent_at,
                            looked)
                jobs = await self.list_jobs(rt, rec.spec.target, newer_than=newer)
            except RetryLater as exc:
                never_submitted = rec.status.job_id is None and rec.status.phase.final
                if not (isinstance(exc.__cause__, AccessRefused) and never_submitted):
                    raise
                jobs = {}  # refused to connect before any submission: nothing to cancel
            mine = [j for j in jobs.values() if owned(j, rec) and not j.state.finished]
            if mine and time.monotonic() - rec.cancel_sent_at > CANCEL_RESEND_SECONDS:
                for job in mine:
                    await self._cancel(rec, job.job_id)  # sets rec.cancel_sent_at
            if not mine:
                return None
            if not rec.status.phase.final:
                await self.write(rec, lifecycle.stop_requested(
                    rec.status, utcnow(), "Deleted").status)
            return mine[0].job_id

    # ------------------------------------------------------------------ polling

    async def poll(self, rt: ClusterRuntime) -> float:
        """One batched query per target (Slurm; login nodes) for every server of the
        cluster, whatever their number; return the next delay."""
        servers = [r for r in self.registry.by_cluster(rt.name)
                   if r.spec and r.status.job_id
                   and (not r.status.phase.final or r.cancel_pending or not r.end_confirmed)]
        jitter = self.settings.poll_jitter
        if not servers:
            return rt.interval(busy=False, jitter=jitter)
        for target in (Target.SLURM, Target.LOGIN):
            group = [r for r in servers if r.spec and r.spec.target == target]
            if group:
                await self._poll_group(rt, target, group)
        # Over every server now, not only those polled: one submitted meanwhile is busy too.
        busy = any(r.status.phase in lifecycle.FAST_POLL
                   for r in self.registry.by_cluster(rt.name) if r.status.job_id)
        return rt.interval(busy=busy, jitter=jitter)

    async def _poll_group(self, rt: ClusterRuntime, target: Target,
                          servers: list[ServerRecord]) -> None:
        listing_began = utcnow()
        try:
            jobs = await self.list_jobs(rt, target, newer_than=time.monotonic())
        except RetryLater as exc:
            await self._unreachable(rt, servers, str(exc.__cause__ or exc))
            return
        except Refused as exc:
            log.warning("cluster %s: %s", rt.name, exc)
            return
        rt.unreachable_since, rt.last_error = None, ""
        by_uid: dict[str, list[JobInfo]] = {}
        for job in jobs.values():
            uid = c.uid_from_comment(job.comment)
            if uid:
                by_uid.setdefault(uid, []).append(job)
        await self._retry_cancels(servers, jobs)
        await self._end_leftovers(servers, by_uid)
        # Each server has its own lock; writing their statuses one after another would make
        # the last of 300 servers starting together wait for 600 API calls.
        gate = asyncio.Semaphore(OBSERVE_CONCURRENCY)

        async def observe(rec: ServerRecord) -> None:
            async with gate:
                await self.observe(rec, rt, pick_job(by_uid.get(rec.uid, []), rec),
                                   listing_began)

        results = await asyncio.gather(*(observe(rec) for rec in servers),
                                       return_exceptions=True)
        for rec, result in zip(servers, results, strict=True):
            if isinstance(result, Exception):
                log.error("%s/%s: status update failed: %s", rec.namespace, rec.name, result)

    async def observe(self, rec: ServerRecord, rt: ClusterRuntime, job: JobInfo | None,
                      listing_began: dt.datetime) -> None:
        async with rec.lock:
            if rec.status.phase.final or not rec.status.job_id:
                return
            submitted = lifecycle.parse_iso(rec.status.submitted_at)
            if job is None and (submitted is None or listing_began > submitted):
                rec.missing_polls += 1
            elif job is not None:
                rec.missing_polls = 0
            decision = lifecycle.observe(
                rec.status, job, utcnow(), stop_requested=rec.stop_requested,
                missing_polls=rec.missing_polls,
                start_timeout=rt.spec.launcher.start_timeout_seconds + 30)
            if decision.cancel and job is not None:
                await self.cancel_or_defer(rec, job.job_id)
            await self.write(rec, decision.status)

    async def cancel_or_defer(self, rec: ServerRecord, job_id: str) -> None:
        """Cancel now, or remember to retry at the next poll (a server we ended must not
        keep its job running until the walltime)."""
        try:
            await self._cancel(rec, job_id)
        except RetryLater:
            log.warning("cancel of job %s deferred: Slurm unreachable", job_id)
            rec.cancel_pending = job_id
        else:
            rec.cancel_pending = None

    async def _retry_cancels(self, servers: list[ServerRecord], jobs: dict[str, JobInfo]
                             ) -> None:
        for rec in servers:
            job = jobs.get(rec.cancel_pending or "")
            if rec.cancel_pending and (job is None or job.state.finished):
                rec.cancel_pending = None
            elif rec.cancel_pending:
                async with rec.lock:
                    await self.cancel_or_defer(rec, rec.cancel_pending)

    async def _end_leftovers(self, servers: list[ServerRecord],
                             by_uid: dict[str, list[JobInfo]]) -> None:
        """A Stopped or Failed server must have no live job: cancel any the listing shows
        (again only after CANCEL_RESEND_SECONDS), and stop looking once there is none."""
        for rec in servers:
            if not rec.status.phase.final or rec.end_confirmed:
                continue
            live = [j for j in by_uid.get(rec.uid, []) if owned(j, rec) and not j.state.finished]
            if not live:
                rec.end_confirmed = True
                continue
            ending = [j for j in live if j.state != JobState.COMPLETING]
            if not ending or time.monotonic() - rec.cancel_sent_at <= CANCEL_RESEND_SECONDS:
                continue
            async with rec.lock:
                for job in ending:
                    log.warning("%s/%s is %s but its job %s is %s: cancelling it",
                                rec.namespace, rec.name, rec.status.phase.value, job.job_id,
                                job.state.value)
                    await self.cancel_or_defer(rec, job.job_id)

    async def _unreachable(self, rt: ClusterRuntime, servers: list[ServerRecord],
                           error: str) -> None:
        now = utcnow()
        if rt.unreachable_since is None:
            rt.unreachable_since = now
        rt.last_error = error
        for rec in servers:
            async with rec.lock:
                await self.write(rec, lifecycle.unreachable(
                    rec.status, rt.unreachable_since, now,
                    self.settings.unknown_grace_seconds, error))


def _target_of(job: JobInfo) -> Target:
    """Login-node processes carry ids that start with ``login:``."""
    return Target.LOGIN if job.job_id.startswith(c.LOGIN_JOB_PREFIX) else Target.SLURM


def owned(job: JobInfo, rec: ServerRecord) -> bool:
    """The job carries this server's tag AND runs as its user: anyone can put any comment
    on their own job, so a tag alone must never make a job (or its node) ours."""
    return (rec.spec is not None and job.comment == c.job_comment(rec.uid)
            and job.user == rec.spec.user)


def pick_job(candidates: list[JobInfo], rec: ServerRecord) -> JobInfo | None:
    """The server's job among those tagged with its uid: its user's, live first."""
    mine = [j for j in candidates if owned(j, rec)]
    if len(mine) < len(candidates):
        log.warning("%s/%s: ignoring %d job(s) tagged with its uid but owned by another user",
                    rec.namespace, rec.name, len(candidates) - len(mine))
    live = [j for j in mine if not j.state.finished]
    chosen = live or mine
    return chosen[-1] if chosen else None
