"""The slurmrestd backend's pure parts, table-tested on responses recorded from a real
slurmrestd 22.05.8 (tests/unit/data/record_slurmrestd.py wrote tests/unit/data/slurmrestd)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from hpchub_operator.backends import rest
from hpchub_operator.backends.base import (
    JobRequest,
    JobState,
    SlurmRejected,
    SlurmUnavailable,
)
from hpchub_operator.slurmjwt import MAX_LIFESPAN, mint_token

DATA = Path(__file__).parent / "data" / "slurmrestd"


def sample(name: str) -> dict[str, Any]:
    """One recorded response: ``{"request", "http_status", "body"}``."""
    recorded: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return recorded


def body(name: str) -> Any:
    return sample(name)["body"]


# ----------------------------------------------------------------------------- jobs


def tagged_jobs() -> dict[str, Any]:
    """The recorded jobs with an hpchub comment, by the uid in their comment."""
    jobs = rest.parse_jobs(body("jobs"), "hpchub:")
    return {info.comment.removeprefix("hpchub:"): info for info in jobs.values()}


# uid in comment -> (user, state, exit code, signal, reason, has nodes)
JOB_TABLE = [
    ("uid-completed", "alice", JobState.COMPLETED, 0, None, "", True),
    ("uid-failed", "alice", JobState.FAILED, 3, None, "NonZeroExitCode", True),
    ("uid-signal", "alice", JobState.FAILED, 0, 9, "JobLaunchFailure", True),
    ("uid-timeout", "bob", JobState.TIMEOUT, 0, 15, "TimeLimit", True),
    ("uid-running", "alice", JobState.RUNNING, None, None, "", True),
    ("uid-gpu", "alice", JobState.RUNNING, None, None, "", True),
    ("uid-held", "bob", JobState.PENDING, None, None, "JobHeldUser", False),
    ("uid-resources", "carol", JobState.PENDING, None, None, "Resources", False),
    ("uid-too-long", "alice", JobState.PENDING, None, None, "PartitionTimeLimit", False),
    ("uid-cancelled", "carol", JobState.CANCELLED, 0, None, "Priority", False),
]


@pytest.mark.parametrize(("uid", "user", "state", "exit_code", "signal", "reason", "placed"),
                         JOB_TABLE, ids=[row[0] for row in JOB_TABLE])
def test_parse_jobs_table(uid: str, user: str, state: JobState, exit_code: int | None,
                          signal: int | None, reason: str, placed: bool) -> None:
    info = tagged_jobs()[uid]

    assert info.user == user
    assert info.state is state
    assert info.exit_code == exit_code
    assert info.signal == signal
    assert info.reason == reason
    assert bool(info.nodes) is placed
    assert info.name == f"rec-hpchub:{uid}"
    assert info.job_id.isdigit()


def test_parse_jobs_keeps_only_tagged_jobs_in_one_dict_by_id() -> None:
    raw = body("jobs")["jobs"]
    jobs = rest.parse_jobs(body("jobs"), "hpchub:")

    assert len(raw) == len(JOB_TABLE) + 1  # one untagged job
    assert set(jobs) == {str(j["job_id"]) for j in raw if j["comment"].startswith("hpchub:")}
    assert all(key == info.job_id for key, info in jobs.items())


def test_parse_jobs_prefix_is_a_prefix() -> None:
    jobs = rest.parse_jobs(body("jobs"), "hpchub:uid-r")

    assert sorted(j.comment for j in jobs.values()) == ["hpchub:uid-resources",
                                                        "hpchub:uid-running"]


def test_running_job_times_and_node() -> None:
    running = tagged_jobs()["uid-running"]
    node = body("node")["nodes"][0]["name"]

    assert running.first_node == node
    assert running.time_limit_minutes == 60
    assert running.start_time is not None and running.end_time is not None
    assert running.end_time - running.start_time == dt.timedelta(minutes=60)
    assert running.start_time.tzinfo is dt.UTC


def test_pending_job_times() -> None:
    jobs = tagged_jobs()

    assert jobs["uid-held"].start_time is None  # 0 in the response: no estimate
    assert jobs["uid-resources"].start_time is not None  # the scheduler's estimate
    assert jobs["uid-too-long"].time_limit_minutes == 100000


def test_parse_jobs_refuses_malformed_entries() -> None:
    with pytest.raises(ValueError, match="job_id"):
        rest.parse_jobs({"jobs": [{"comment": "hpchub:x", "job_state": "RUNNING"}]}, "hpchub:")
    with pytest.raises(ValueError, match="jobs list"):
        rest.parse_jobs(body("jobs_controller_down") | {"jobs": None}, "hpchub:")


def test_untagged_malformed_entry_is_ignored() -> None:
    assert rest.parse_jobs({"jobs": [{"comment": "other"}]}, "hpchub:") == {}


@pytest.mark.parametrize(("raw", "expected"), [
    (0, (0, None)),
    (768, (3, None)),
    (9, (0, 9)),
    (15, (0, 15)),
    (256 * 255, (255, None)),
    (None, (None, None)),
    ({"status": "FAILED", "return_code": 3, "signal": {"signal_id": 0}}, (3, None)),
    ({"status": "SIGNALED", "return_code": 0, "signal": {"signal_id": 9}}, (0, 9)),
])
def test_exit_status(raw: Any, expected: tuple[int | None, int | None]) -> None:
    assert rest._exit_status(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    (5, 5), (0, 0), (None, None), (0xFFFFFFFF, None), (True, None), ("5", None),
    ({"set": True, "infinite": False, "number": 7}, 7),
    ({"set": False, "infinite": False, "number": 0}, None),
    ({"set": True, "infinite": True, "number": 0}, None),
])
def test_number(raw: Any, expected: int | None) -> None:
    assert rest._number(raw) == expected


# ----------------------------------------------------------------------------- errors


SUCCESSES = ["ping", "partitions", "nodes", "node", "jobs", "submit_ok",
             "submit_time_limit_warning", "cancel_ok", "cancel_finished"]

# sample -> (error class, text expected in the message)
FAILURES = [
    ("submit_bad_partition", SlurmRejected, "Invalid partition name specified"),
    ("submit_bad_gres", SlurmRejected, "Requested node configuration is not available"),
    ("submit_no_environment", SlurmRejected, "environment must be set"),
    ("cancel_denied", SlurmRejected, "Access/permission denied"),
    ("cancel_invalid_id", SlurmRejected, "Invalid job id specified"),
    ("node_invalid", SlurmRejected, "Invalid node name specified"),
    ("jobs_controller_down", SlurmUnavailable, "Failed while looking for jobs"),
    ("ping_controller_down", SlurmUnavailable, "slurmctld config is unable to load"),
    ("partitions_controller_down", SlurmUnavailable, "Unspecified error"),
    ("submit_controller_down", SlurmUnavailable, "Unable to contact slurm controller"),
    ("cancel_controller_down", SlurmUnavailable, "Unable to contact slurm controller"),
    ("jobs_bad_token", SlurmUnavailable, "Failed while looking for jobs"),
    ("jobs_no_token", SlurmUnavailable, "Authentication failure"),
]


@pytest.mark.parametrize("name", SUCCESSES)
def test_classify_successes(name: str) -> None:
    recorded = sample(name)

    assert rest.classify(recorded["http_status"], recorded["body"], name) is None


@pytest.mark.parametrize(("name", "error", "text"), FAILURES, ids=[f[0] for f in FAILURES])
def test_classify_failures(name: str, error: type[Exception], text: str) -> None:
    recorded = sample(name)

    found = rest.classify(recorded["http_status"], recorded["body"], "doing it")

    assert type(found) is error
    assert text in str(found)
    assert str(found).startswith("doing it: ")


def test_refusals_are_http_500_in_slurmrestd_22_05() -> None:
    """Why classification reads Slurm's errno and not the HTTP status."""
    assert sample("submit_bad_partition")["http_status"] == 500
    assert sample("submit_controller_down")["http_status"] == 500


@pytest.mark.parametrize(("name", "gone"), [
    ("cancel_ok", True), ("cancel_finished", True), ("cancel_invalid_id", True),
    ("cancel_denied", False), ("cancel_controller_down", False),
])
def test_classify_cancel(name: str, gone: bool) -> None:
    recorded = sample(name)

    error = rest.classify_cancel(recorded["http_status"], recorded["body"], "cancel")

    assert (error is None) is gone


@pytest.mark.parametrize(("name", "errnos"), [
    ("submit_bad_partition", [2000]),  # "error_code"
    ("cancel_invalid_id", [2017]),  # "error_number"
    ("node_invalid", [2018]),  # "errno"
    ("submit_no_environment", [2127, 9001]),
    ("jobs_controller_down", [-1]),
    ("jobs_no_token", []),  # plain text
    ("jobs", []),
])
def test_response_errors_reads_every_errno_key(name: str, errnos: list[int]) -> None:
    assert [e.errno for e in rest.response_errors(body(name))] == errnos


def test_submit_with_warning_returns_the_job_id() -> None:
    warning = body("submit_time_limit_warning")

    assert rest.parse_submit(warning).isdigit()
    assert [e.errno for e in rest.response_errors(warning)] == [2015]
    assert rest.parse_submit(body("submit_ok")) == str(body("submit_ok")["job_id"])
    with pytest.raises(ValueError, match="job_id"):
        rest.parse_submit(body("submit_bad_partition"))


# ----------------------------------------------------------------------------- cluster


def test_parse_cluster_facts() -> None:
    facts = rest.parse_cluster_facts(body("ping"), body("partitions"), body("nodes"))
    by_name = {p.name: p for p in facts.partitions}

    assert facts.version == "22.05.8"
    assert set(by_name) == {"compute", "gpu"}
    compute = by_name["compute"]
    assert compute.is_default and not by_name["gpu"].is_default
    assert compute.state == "UP"
    assert compute.nodes == 1
    assert compute.cpus >= 1
    assert compute.memory_mb is not None and compute.memory_mb > 0
    assert compute.max_time_limit == "1:00:00"
    assert compute.default_time_limit is None
    assert by_name["gpu"].gpu_types == ("fake",)


def test_parse_ping() -> None:
    rest.parse_ping(body("ping"))
    with pytest.raises(SlurmUnavailable, match="ping"):
        rest.parse_ping(body("ping_controller_down"))


def test_parse_version_without_release() -> None:
    meta = {"meta": {"Slurm": {"version": {"major": 22, "minor": 5, "micro": 8}}}}

    assert rest.parse_version(meta) == "22.05.8"
    with pytest.raises(ValueError, match="version"):
        rest.parse_version({})


def test_parse_node_address() -> None:
    node = body("node")["nodes"][0]["name"]

    assert rest.parse_node_address(body("node"), node) == "127.0.0.1"
    with pytest.raises(ValueError, match="not in the response"):
        rest.parse_node_address(body("node"), "other")


@pytest.mark.parametrize(("gres", "types"), [
    ("gpu:fake:2", {"fake"}),
    ("gpu:a100:4(S:0-1),gpu:v100:2(S:0)", {"a100", "v100"}),
    ("gpu:4", set()),
    ("mps:100,gpu:h100:8", {"h100"}),
    ("", set()),
    ("(null)", set()),
])
def test_gres_gpu_types(gres: str, types: set[str]) -> None:
    assert rest.gres_gpu_types(gres) == types


@pytest.mark.parametrize(("minutes", "text"), [
    (None, None), (0, "0:00:00"), (60, "1:00:00"), (90, "1:30:00"), (1440, "1-00:00:00"),
    (2 * 1440 + 61, "2-01:01:00"),
])
def test_minutes_to_time(minutes: int | None, text: str | None) -> None:
    assert rest._minutes_to_time(minutes) == text


# ----------------------------------------------------------------------------- submission


def request(**changes: Any) -> JobRequest:
    fields: dict[str, Any] = {
        "user": "alice", "name": "hpchub-s", "comment": "hpchub:u",
        "script": "#!/bin/bash\nexec hpchub-launch\n",
        "environment": {"JUPYTERHUB_API_TOKEN": "secret-token"},
    }
    return JobRequest(**(fields | changes))


def test_submission_puts_environment_in_json_not_script() -> None:
    sent = rest.submission(request())

    assert sent["script"] == "#!/bin/bash\nexec hpchub-launch\n"
    assert "secret-token" not in sent["script"]
    assert sent["job"]["environment"]["JUPYTERHUB_API_TOKEN"] == "secret-token"
    assert sent["job"]["environment"]["PATH"] == rest.DEFAULT_JOB_PATH


def test_submission_fields() -> None:
    sent = rest.submission(request(partition="gpu", account="proj", qos="q", reservation="r",
                                   nodes=2, cpus_per_task=4, memory_mb=2048,
                                   gres="gpu:a100:1", time_limit_minutes=90,
                                   constraint="ib&avx2", working_directory="/scratch/a",
                                   environment={"PATH": "/opt/bin"}))["job"]

    assert sent == {
        "name": "hpchub-s", "comment": "hpchub:u", "nodes": 2, "cpus_per_task": 4,
        "time_limit": 90, "current_working_directory": "/scratch/a",
        "standard_output": "/dev/null", "requeue": False,
        "environment": {"PATH": "/opt/bin"}, "partition": "gpu", "account": "proj",
        "qos": "q", "reservation": "r", "constraints": "ib&avx2", "gres": "gpu:a100:1",
        "memory_per_node": 2048,
    }


def test_submission_leaves_unset_options_out() -> None:
    sent = rest.submission(request())["job"]

    for key in ("partition", "account", "qos", "reservation", "constraints", "gres",
                "memory_per_node"):
        assert key not in sent


def test_backend_refuses_bad_api_version() -> None:
    with pytest.raises(ValueError, match="openapi"):
        rest.SlurmRestBackend("http://x", "v0.0.38/../..", b"k", "mon")


def test_backend_refuses_bad_monitor_user() -> None:
    with pytest.raises(ValueError, match="user name"):
        rest.SlurmRestBackend("http://x", "v0.0.38", b"k", "mon\r\nX-Evil: 1")


@pytest.mark.parametrize(("call", "text"), [
    (lambda b: b.cancel("1", "bob\r\nX-Evil: 1"), "user name"),
    (lambda b: b.cancel("1; 2", "bob"), "job id"),
    (lambda b: b.node_address("../ping"), "node name"),
    (lambda b: b.submit(request(user="-alice")), "user name"),
])
async def test_backend_refuses_bad_arguments_before_any_request(call: Any, text: str) -> None:
    backend = rest.SlurmRestBackend("http://127.0.0.1:9", "v0.0.38", b"k", "mon")

    with pytest.raises(SlurmRejected, match=text):
        await call(backend)
    assert backend._session is None  # nothing was sent


def test_backend_repr_has_no_key() -> None:
    backend = rest.SlurmRestBackend("http://x:1/", "v0.0.38", b"very-secret-key", "mon")

    assert "very-secret-key" not in repr(backend)
    assert "http://x:1/slurm/v0.0.38" in repr(backend)


# ----------------------------------------------------------------------------- tokens


def test_mint_token_claims() -> None:
    key = b"k" * 32
    before = int(time.time())

    claims = jwt.decode(mint_token(key, "alice", 60), key, algorithms=["HS256"])

    assert claims["sun"] == "alice"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 60
    assert jwt.get_unverified_header(mint_token(key, "alice"))["alg"] == "HS256"


def test_mint_token_default_lifespan_is_the_maximum() -> None:
    key = b"k" * 32
    claims = jwt.decode(mint_token(key, "bob"), key, algorithms=["HS256"])

    assert claims["exp"] - claims["iat"] == MAX_LIFESPAN == 300


@pytest.mark.parametrize(("key", "user", "lifespan", "text"), [
    (b"k", "alice", 301, "lifespan"),
    (b"k", "alice", 3600, "lifespan"),
    (b"k", "alice", 0, "lifespan"),
    (b"k", "alice", -5, "lifespan"),
    (b"", "alice", 60, "key"),
    (b"k", "", 60, "user"),
])
def test_mint_token_refuses(key: bytes, user: str, lifespan: int, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        mint_token(key, user, lifespan)
