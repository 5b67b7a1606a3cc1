"""A Stopped or Failed server must not keep a live job: the poll looks for one after every
operator start (a cancel lost to an outage and a restart is not remembered otherwise) and
cancels it, then stops looking."""

from __future__ import annotations

from typing import Any

import pytest

from hpchub_api import constants as c
from hpchub_api.models import HPCClusterSpec
from hpchub_operator import reconciler
from hpchub_operator.backends.base import JobInfo, JobState
from hpchub_operator.clusters import ClusterRuntime
from hpchub_operator.metrics import Metrics
from hpchub_operator.reconciler import Reconciler, RetryLater
from hpchub_operator.registry import ServerRegistry
from hpchub_operator.settings import OperatorSettings

UID = "5f0c2a11-0b6d-4c55-9d7e-1f7a2c7e5f3f"


class Backend:
    single_job_query = False

    def __init__(self, jobs: list[JobInfo]) -> None:
        self.listed: dict[str, JobInfo] = {j.job_id: j for j in jobs}
        self.listings = 0
        self.cancelled: list[tuple[str, str]] = []

    async def jobs(self, prefix: str) -> dict[str, JobInfo]:
        self.listings += 1
        return dict(self.listed)

    async def cancel(self, job_id: str, user: str) -> None:
        self.cancelled.append((job_id, user))


class Clusters:
    def __init__(self, rt: ClusterRuntime) -> None:
        self.rt = rt

    async def get(self, name: str) -> ClusterRuntime | None:
        return self.rt if name == self.rt.name else None


def _setup(phase: str, jobs: list[JobInfo]) -> tuple[Reconciler, Backend, Any]:
    registry = ServerRegistry()
    rec = registry.observe({
        "metadata": {"namespace": "ns", "name": "lab", "uid": UID},
        "spec": {"user": "alice", "cluster": "c", "target": "slurm"},
        "status": {"phase": phase, "jobId": "42"}})
    backend = Backend(jobs)
    rt = ClusterRuntime("c", HPCClusterSpec(), backend)  # type: ignore[arg-type]
    rc = Reconciler(OperatorSettings(), kube=None, metrics=Metrics(),  # type: ignore[arg-type]
                    clusters=Clusters(rt), registry=registry,  # type: ignore[arg-type]
                    callback_key=b"k" * 32, callback_url="http://127.0.0.1:1")
    return rc, backend, (rt, rec)


def job(state: str, user: str = "alice", job_id: str = "42") -> JobInfo:
    return JobInfo(job_id, user, JobState.parse(state), comment=c.job_comment(UID))


async def test_a_failed_servers_running_job_is_cancelled_once_then_forgotten() -> None:
    rc, backend, (rt, rec) = _setup("Failed", [job("RUNNING")])
    await rc.poll(rt)
    assert backend.cancelled == [("42", "alice")]
    assert not rec.end_confirmed
    await rc.poll(rt)  # still listed as running: not cancelled again within the window
    assert backend.cancelled == [("42", "alice")]
    backend.listed = {"42": job("CANCELLED")}
    await rc.poll(rt)
    assert rec.end_confirmed
    listings = backend.listings
    await rc.poll(rt)  # nothing left to look at: no listing at all
    assert backend.listings == listings


async def test_a_stopped_server_without_a_job_is_confirmed_at_the_first_poll() -> None:
    rc, backend, (rt, rec) = _setup("Stopped", [])
    await rc.poll(rt)
    assert rec.end_confirmed and backend.cancelled == [] and backend.listings == 1


async def test_a_job_with_the_tag_but_another_user_is_not_touched() -> None:
    rc, backend, (rt, rec) = _setup("Failed", [job("RUNNING", user="mallory", job_id="7")])
    await rc.poll(rt)
    assert backend.cancelled == [] and rec.end_confirmed


async def test_a_completing_job_is_waited_for_not_cancelled() -> None:
    rc, backend, (rt, rec) = _setup("Stopped", [job("COMPLETING")])
    await rc.poll(rt)
    assert backend.cancelled == [] and not rec.end_confirmed


class EndingBackend(Backend):
    """Shows the job alive for the first ``alive_for`` listings, then cancelled."""

    def __init__(self, alive_for: int) -> None:
        super().__init__([job("RUNNING")])
        self.alive_for = alive_for

    async def jobs(self, prefix: str) -> dict[str, JobInfo]:
        listed = await super().jobs(prefix)
        return listed if self.listings <= self.alive_for else {"42": job("CANCELLED")}


async def test_a_deletion_waits_for_slurm_in_its_handler(monkeypatch: Any) -> None:
    """No kopf retry (each one writes the object) while Slurm ends the job within the wait."""
    monkeypatch.setattr(reconciler, "FINALIZE_RECHECK_SECONDS", 0.01)
    rc, _, (rt, rec) = _setup("Stopped", [])
    rt.backend = backend = EndingBackend(alive_for=3)  # type: ignore[assignment]

    await rc.finalize(rec)

    assert backend.cancelled == [("42", "alice")] and backend.listings == 4
    assert rc.registry.get(UID) is None


async def test_a_deletion_hands_back_to_kopf_after_its_wait(monkeypatch: Any) -> None:
    monkeypatch.setattr(reconciler, "FINALIZE_RECHECK_SECONDS", 0.01)
    monkeypatch.setattr(reconciler, "FINALIZE_WAIT_SECONDS", 0.05)
    rc, backend, (_rt, rec) = _setup("Stopped", [job("RUNNING")])

    with pytest.raises(RetryLater, match="waiting for Slurm to end job 42"):
        await rc.finalize(rec)

    assert backend.cancelled == [("42", "alice")]  # once: the resend waits 30 s
    assert backend.listings >= 2 and rc.registry.get(UID) is rec
