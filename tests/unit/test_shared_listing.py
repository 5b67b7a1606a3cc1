"""The operator's shared Slurm listing: at most one in flight per cluster and target, however
many creations, reports and start hints want a fresh one at the same time."""

from __future__ import annotations

import asyncio
from typing import Any

from hpchub_api import constants as c
from hpchub_api.models import HPCClusterSpec, Target
from hpchub_operator.backends.base import JobInfo, JobState
from hpchub_operator.clusters import ClusterRuntime
from hpchub_operator.metrics import Metrics
from hpchub_operator.readiness import Readiness
from hpchub_operator.reconciler import Reconciler
from hpchub_operator.registry import ServerRegistry
from hpchub_operator.settings import OperatorSettings


class CountingBackend:
    """A Slurm backend whose listing takes a while and records how many ran at once."""

    def __init__(self) -> None:
        self.calls = 0
        self.in_flight = 0
        self.most_at_once = 0

    async def jobs(self, prefix: str) -> dict[str, Any]:
        self.calls += 1
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            return {}
        finally:
            self.in_flight -= 1


def _reconciler() -> Reconciler:
    return Reconciler(OperatorSettings(), kube=None, metrics=Metrics(),  # type: ignore[arg-type]
                      clusters=None, registry=ServerRegistry(),  # type: ignore[arg-type]
                      callback_key=b"k" * 32, callback_url="http://127.0.0.1:1")


async def test_callers_wanting_newer_listings_never_run_two_at_once() -> None:
    rec = _reconciler()
    backend = CountingBackend()
    rt = ClusterRuntime("c", HPCClusterSpec(), backend)  # type: ignore[arg-type]

    # 100 callers arriving one after another while listings run, each wanting a listing
    # that began after its own arrival (what start hints and polls ask for).
    async def caller(delay: float) -> None:
        await asyncio.sleep(delay)
        await rec.list_jobs(rt, Target.SLURM)

    await asyncio.gather(*(caller(i * 0.002) for i in range(100)))
    assert backend.most_at_once == 1
    # ~0.2 s of arrivals over 0.05 s listings: a handful of listings, not one per caller.
    assert 2 <= backend.calls <= 8, backend.calls


async def test_a_listing_that_began_late_enough_is_shared() -> None:
    rec = _reconciler()
    backend = CountingBackend()
    rt = ClusterRuntime("c", HPCClusterSpec(), backend)  # type: ignore[arg-type]
    first = await rec.list_jobs(rt, Target.SLURM)
    # Callers content with any listing since before the first began reuse it.
    again = await asyncio.gather(*(rec.list_jobs(rt, Target.SLURM, newer_than=0.0)
                                   for _ in range(20)))
    assert backend.calls == 1 and all(a is first for a in again)


class StaleListingBackend(CountingBackend):
    """Lists the job as still pending; asked about the job alone, says where it runs."""

    single_job_query = True

    def __init__(self, pending: JobInfo, running: JobInfo) -> None:
        super().__init__()
        self.pending, self.running, self.single_queries = pending, running, 0

    async def jobs(self, prefix: str) -> dict[str, Any]:
        await super().jobs(prefix)
        return {self.pending.job_id: self.pending}

    async def job(self, job_id: str, prefix: str) -> JobInfo | None:
        self.single_queries += 1
        return self.running if job_id == self.running.job_id else None

    async def node_address(self, node: str) -> str:
        return {"n01": "10.0.0.1"}[node]


async def test_a_report_after_a_stale_listing_asks_slurm_again() -> None:
    """The app reported, so its job runs; a listing made before it started (job pending,
    no node) must not send the launcher into its back-off."""
    uid = "0b6d2c7e-1f7a-4c55-9d7e-5f3f7f0c2a11"
    registry = ServerRegistry()
    rec = registry.observe({
        "metadata": {"namespace": "ns", "name": "lab", "uid": uid},
        "spec": {"user": "alice", "cluster": "c", "target": "slurm"},
        "status": {"phase": "Starting", "jobId": "42"}})
    pending = JobInfo("42", "alice", JobState.parse("PENDING"), comment=c.job_comment(uid))
    running = JobInfo("42", "alice", JobState.parse("RUNNING"), comment=c.job_comment(uid),
                      nodes="n[01-02]")
    backend = StaleListingBackend(pending, running)
    rec_ = _reconciler()
    ready = Readiness(rec_)
    rt = ClusterRuntime("c", HPCClusterSpec(), backend)  # type: ignore[arg-type]
    try:
        await rec_.list_jobs(rt, Target.SLURM)  # the stale listing, made before the start
        assert await ready._job_host(rt, rec) == "10.0.0.1"
        # The job seen alone is kept: asking again needs no query.
        assert await ready._job_host(rt, rec) == "10.0.0.1"
    finally:
        await ready.close()
    assert backend.single_queries == 1
