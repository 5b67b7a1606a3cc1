"""Table tests of the pure lifecycle decisions."""

from __future__ import annotations

import datetime as dt

import pytest

from hpchub_api.models import JupyterServerStatus, Phase
from hpchub_operator import lifecycle as lc
from hpchub_operator.backends.base import JobInfo, JobState, first_host

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
EARLIER = NOW - dt.timedelta(minutes=5)


def status(phase: Phase, **kw: object) -> JupyterServerStatus:
    base: dict[str, object] = {"phase": phase, "job_id": "42",
                               "submitted_at": lc.iso(EARLIER)}
    base.update(kw)
    return JupyterServerStatus.model_validate(base)


def job(state: JobState, nodes: str = "n01", **kw: object) -> JobInfo:
    return JobInfo(job_id="42", user="alice", state=state, comment="hpchub:u", nodes=nodes,
                   **kw)  # type: ignore[arg-type]


READY = {"ready_at": lc.iso(EARLIER), "url": "http://n01:20000/", "host": "n01",
         "port": 20000}


@pytest.mark.parametrize(("before", "observed", "stop", "phase", "reason", "cancel"), [
    (status(Phase.SUBMITTED), job(JobState.PENDING, nodes="", reason="Priority"), False,
     Phase.QUEUED, "QueuedPriority", False),
    (status(Phase.QUEUED), job(JobState.RUNNING), False, Phase.STARTING, "Starting", False),
    (status(Phase.RUNNING, **READY), job(JobState.RUNNING), False, Phase.RUNNING, "Ready",
     False),
    (status(Phase.UNKNOWN, **READY), job(JobState.RUNNING), False, Phase.RUNNING, "Ready",
     False),
    (status(Phase.UNKNOWN), job(JobState.PENDING, nodes=""), False, Phase.QUEUED, "Queued",
     False),
    (status(Phase.RUNNING, **READY), job(JobState.TIMEOUT, time_limit_minutes=1), False,
     Phase.STOPPED, "TimeLimit", False),
    (status(Phase.RUNNING, **READY), job(JobState.COMPLETED, exit_code=0), False,
     Phase.STOPPED, "ServerExited", False),
    (status(Phase.RUNNING, **READY), job(JobState.FAILED, exit_code=1), False, Phase.FAILED,
     "ServerCrashed", False),
    (status(Phase.STARTING), job(JobState.FAILED, exit_code=2), False, Phase.FAILED,
     "JobFailedAtStart", False),
    (status(Phase.RUNNING, **READY), job(JobState.CANCELLED), False, Phase.FAILED,
     "CancelledOutsideHpchub", False),
    (status(Phase.STOPPING), job(JobState.CANCELLED), True, Phase.STOPPED, "Stopped", False),
    (status(Phase.RUNNING, **READY), job(JobState.NODE_FAIL), False, Phase.FAILED,
     "NodeFailure", False),
    (status(Phase.RUNNING, **READY), job(JobState.OUT_OF_MEMORY), False, Phase.FAILED,
     "OutOfMemory", False),
    (status(Phase.RUNNING, **READY), job(JobState.RUNNING), True, Phase.STOPPING,
     "Stopping", True),
    (status(Phase.FAILED), job(JobState.RUNNING), False, Phase.FAILED, None, False),
])
def test_observe(before: JupyterServerStatus, observed: JobInfo, stop: bool, phase: Phase,
                 reason: str | None, cancel: bool) -> None:
    d = lc.observe(before, observed, NOW, stop_requested=stop, missing_polls=0,
                   start_timeout=600)
    assert d.status.phase == phase
    assert d.status.reason == reason
    assert d.cancel is cancel
    if phase.final and not before.phase.final:
        assert d.status.url is None and d.status.stopped_at == lc.iso(NOW)


def test_missing_job_needs_two_polls_then_vanished() -> None:
    s = status(Phase.RUNNING, **READY)
    once = lc.observe(s, None, NOW, stop_requested=False, missing_polls=1, start_timeout=60)
    assert once.status.phase == Phase.RUNNING
    twice = lc.observe(s, None, NOW, stop_requested=False, missing_polls=2, start_timeout=60)
    assert twice.status.phase == Phase.STOPPED and twice.status.reason == "JobVanished"


def test_start_timeout_fails_and_cancels() -> None:
    s = status(Phase.STARTING, started_at=lc.iso(NOW - dt.timedelta(seconds=700)))
    d = lc.observe(s, job(JobState.RUNNING), NOW, stop_requested=False, missing_polls=0,
                   start_timeout=600)
    assert d.status.phase == Phase.FAILED and d.status.reason == "StartTimeout" and d.cancel


def test_unreachable_respects_grace_and_keeps_facts() -> None:
    s = status(Phase.RUNNING, **READY)
    early = lc.unreachable(s, NOW - dt.timedelta(seconds=5), NOW, 20, "timeout")
    assert early.phase == Phase.RUNNING
    assert any(c.type == lc.SLURM_REACHABLE and c.status == "False" for c in early.conditions)
    late = lc.unreachable(s, NOW - dt.timedelta(seconds=30), NOW, 20, "timeout")
    assert late.phase == Phase.UNKNOWN and late.url == READY["url"] and late.job_id == "42"
    back = lc.observe(late, job(JobState.RUNNING), NOW, stop_requested=False,
                      missing_polls=0, start_timeout=600)
    assert back.status.phase == Phase.RUNNING
    assert all(c.status == "True" for c in back.status.conditions
               if c.type == lc.SLURM_REACHABLE)


def test_stop_without_job_is_stopped_at_once() -> None:
    d = lc.stop_requested(JupyterServerStatus(), NOW)
    assert d.status.phase == Phase.STOPPED and not d.cancel
    d = lc.stop_requested(status(Phase.QUEUED), NOW)
    assert d.status.phase == Phase.STOPPING and d.cancel


def test_ready_and_failure_reports() -> None:
    s = lc.ready(status(Phase.STARTING), "10.0.0.5", 20001, "http://10.0.0.5:20001/", NOW)
    assert s.phase == Phase.RUNNING and s.ready_at == lc.iso(NOW)
    d = lc.start_failed(status(Phase.STARTING), "jupyter exited with code 1", NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "AppFailedToStart"
    assert d.cancel
    assert lc.ready(d.status, "h", 1, "u", NOW).phase == Phase.FAILED


def test_condition_transition_time_only_moves_on_change() -> None:
    conds = lc.set_condition([], "Ready", True, "A", "", EARLIER, 1)
    same = lc.set_condition(conds, "Ready", True, "B", "", NOW, 1)
    assert same[0].last_transition_time == lc.iso(EARLIER)
    flipped = lc.set_condition(same, "Ready", False, "C", "", NOW, 1)
    assert flipped[0].last_transition_time == lc.iso(NOW)


def test_status_patch_removes_cleared_fields() -> None:
    old = status(Phase.RUNNING, **READY)
    new = old.model_copy(update={"phase": Phase.STOPPED, "url": None})
    patch = lc.status_patch(old, new)
    assert patch == {"phase": "Stopped", "url": None}
    assert lc.status_patch(old, old) == {}


@pytest.mark.parametrize(("hostlist", "first"), [
    ("n01", "n01"), ("n[01-03]", "n01"), ("n[07,09]", "n07"), ("a1,b2", "a1"), ("", ""),
    ("gpu[10-12],cpu1", "gpu10"),
])
def test_first_host(hostlist: str, first: str) -> None:
    assert first_host(hostlist) == first


@pytest.mark.parametrize(("raw", "state"), [
    ("RUNNING", JobState.RUNNING), (["PENDING"], JobState.PENDING),
    ("CANCELLED by 0", JobState.CANCELLED), ("WEIRD", JobState.OTHER), (None, JobState.OTHER),
])
def test_job_state_parse(raw: object, state: JobState) -> None:
    assert JobState.parse(raw) == state  # type: ignore[arg-type]
