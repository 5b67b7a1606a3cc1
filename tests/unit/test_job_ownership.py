"""A job is a server's only if it carries the server's tag AND runs as its user."""

from __future__ import annotations

from hpchub_api.models import JupyterServerSpec, JupyterServerStatus
from hpchub_operator.backends.base import JobInfo, JobState
from hpchub_operator.reconciler import owned, pick_job
from hpchub_operator.registry import ServerRecord


def record() -> ServerRecord:
    spec = JupyterServerSpec.model_validate({"user": "alice", "cluster": "c"})
    return ServerRecord("default", "lab", "uid-1", 1, spec, None, JupyterServerStatus())


def job(job_id: str, user: str, state: JobState = JobState.RUNNING,
        comment: str = "hpchub:uid-1") -> JobInfo:
    return JobInfo(job_id=job_id, user=user, state=state, comment=comment, nodes="n1")


def test_spoofed_tag_from_another_user_is_ignored() -> None:
    rec = record()
    assert not owned(job("7", "mallory"), rec)
    assert pick_job([job("7", "mallory")], rec) is None
    assert pick_job([job("7", "mallory"), job("8", "alice")], rec) == job("8", "alice")


def test_live_job_preferred_over_finished_one() -> None:
    rec = record()
    done, live = job("1", "alice", JobState.COMPLETED), job("2", "alice")
    assert pick_job([live, done], rec) == live
    assert pick_job([done], rec) == done
    assert not owned(job("3", "alice", comment="hpchub:uid-2"), rec)
