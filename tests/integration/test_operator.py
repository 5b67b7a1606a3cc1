"""The operator end to end against the real API server, Slurm and slurmrestd."""

from __future__ import annotations

import base64
import datetime as dt
import pwd
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpchub_api import constants as c
from hpchub_operator.rbac import OPERATOR_RULES
from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.slurm import SlurmCluster

from .operator_helpers import (
    NS,
    SERVERS,
    create_server,
    delete_server,
    describe,
    get_server,
    http_status,
    job_state,
    metric_value,
    reasons_through,
    slurm_jobs,
    wait_gone,
    wait_phase,
)

RUNNING = {"Running"}
FINAL = {"Stopped", "Failed"}


def server_token(kube: KubeClient, obj: dict[str, Any]) -> str:
    secret = kube.get(f"/api/v1/namespaces/{NS}/secrets/{obj['status']['tokenSecret']}")
    return base64.b64decode(secret["data"]["token"]).decode()


@pytest.fixture(scope="module")
def time_limited(operator: OperatorProcess, kube_admin: KubeClient) -> Iterator[str]:
    """A server with a 1-minute time limit, created first so the minute passes meanwhile."""
    create_server(kube_admin, "walltime", slurm={"partition": "compute", "timeLimit": "1"})
    yield "walltime"
    delete_server(kube_admin, "walltime")


def test_server_reaches_running_with_url(operator: OperatorProcess, kube_admin: KubeClient,
                                         slurm: SlurmCluster, time_limited: str) -> None:
    create_server(kube_admin, "lab-one", environment={
        "variables": [{"name": "OMP_NUM_THREADS", "value": "2"}]})
    obj = wait_phase(kube_admin, "lab-one", RUNNING | FINAL, timeout=180)
    assert obj["status"]["phase"] == "Running", describe(kube_admin, "lab-one")
    st = obj["status"]
    assert st["url"].startswith("http://127.0.0.1:") and st["jobId"] and st["node"]
    token = server_token(kube_admin, obj)
    assert http_status(st["url"] + "api/status", token) == 200
    assert http_status(st["url"] + "api/status") in (401, 403)  # the token is required
    # kubectl get jsrv: the server-side table carries the columns a human wants.
    table = kube_admin.request("GET", f"{SERVERS}/lab-one",
                               accept="application/json;as=Table;v=v1;g=meta.k8s.io")
    cols = [col["name"] for col in table["columnDefinitions"]]
    row = dict(zip(cols, table["rows"][0]["cells"], strict=False))
    assert row["User"] == "alice" and row["Phase"] == "Running" and row["URL"] == st["url"]
    assert row["Node"] == st["node"]
    # Events tell the path the server took.
    reasons = reasons_through(kube_admin, "lab-one", "Running")
    assert reasons[0] == "Submitted" and reasons[-1] == "Running", reasons
    conds = {cond["type"]: cond["status"] for cond in st["conditions"]}
    assert conds["Ready"] == "True" and conds["Submitted"] == "True"


def test_delete_cancels_job_and_releases_finalizer(operator: OperatorProcess,
                                                   kube_admin: KubeClient,
                                                   slurm: SlurmCluster) -> None:
    obj = get_server(kube_admin, "lab-one")
    uid = obj["metadata"]["uid"]
    assert c.FINALIZER in obj["metadata"]["finalizers"]
    delete_server(kube_admin, "lab-one")
    wait_gone(kube_admin, "lab-one")
    jobs = slurm_jobs(slurm, uid)
    assert jobs and all(job_state(j) in ("CANCELLED", "COMPLETED") for j in jobs), jobs


def test_stop_flag_cancels_job(operator: OperatorProcess, kube_admin: KubeClient,
                               slurm: SlurmCluster) -> None:
    uid = create_server(kube_admin, "lab-stop")["metadata"]["uid"]
    wait_phase(kube_admin, "lab-stop", {"Queued", "Starting", "Running"})
    kube_admin.patch(f"{SERVERS}/lab-stop", {"spec": {"stop": True}})
    obj = wait_phase(kube_admin, "lab-stop", FINAL, timeout=60)
    assert obj["status"]["phase"] == "Stopped" and obj["status"]["reason"] == "Stopped"
    assert all(job_state(j) == "CANCELLED" for j in slurm_jobs(slurm, uid))
    delete_server(kube_admin, "lab-stop")
    wait_gone(kube_admin, "lab-stop")


def test_app_that_exits_at_once_fails_with_reason(operator: OperatorProcess,
                                                  kube_admin: KubeClient) -> None:
    # The user's environment lacks the app: the launcher reports why, at once.
    create_server(kube_admin, "lab-broken", environment={
        "workingDirectory": "/nonexistent/dir"})
    began = time.monotonic()
    obj = wait_phase(kube_admin, "lab-broken", FINAL, timeout=90)
    st = obj["status"]
    assert st["phase"] == "Failed", describe(kube_admin, "lab-broken")
    assert "/nonexistent/dir" in st["message"], st
    assert time.monotonic() - began < 60  # not a start timeout
    # The job's own log, in the user's home, tells the same story with its details.
    assert st["logFile"] == f"~/.hpchub/logs/hpchub-lab-broken-{st['jobId']}.log", st
    log = Path(pwd.getpwnam("alice").pw_dir) / st["logFile"].removeprefix("~/")
    text = log.read_text()
    assert "cannot enter the working directory /nonexistent/dir" in text, text
    assert log.stat().st_uid == pwd.getpwnam("alice").pw_uid
    delete_server(kube_admin, "lab-broken")
    wait_gone(kube_admin, "lab-broken")


def test_slurm_outage_is_unknown_not_stopped(operator: OperatorProcess, kube_admin: KubeClient,
                                             slurm: SlurmCluster) -> None:
    create_server(kube_admin, "lab-outage")
    obj = wait_phase(kube_admin, "lab-outage", RUNNING | FINAL, timeout=180)
    assert obj["status"]["phase"] == "Running", describe(kube_admin, "lab-outage")
    job_id = obj["status"]["jobId"]
    slurm.stop_controller()
    try:
        obj = wait_phase(kube_admin, "lab-outage", {"Unknown"} | FINAL, timeout=60)
        assert obj["status"]["phase"] == "Unknown", describe(kube_admin, "lab-outage")
        assert obj["status"]["url"] and obj["status"]["jobId"] == job_id
    finally:
        slurm.start_controller()
    obj = wait_phase(kube_admin, "lab-outage", RUNNING | FINAL, timeout=60)
    assert obj["status"]["phase"] == "Running" and obj["status"]["jobId"] == job_id
    assert http_status(obj["status"]["url"] + "api/status",
                       server_token(kube_admin, obj)) == 200
    delete_server(kube_admin, "lab-outage")
    wait_gone(kube_admin, "lab-outage")


def _set_status_rights(kube_admin: KubeClient, allowed: bool) -> None:
    rules = OPERATOR_RULES if allowed else [
        r for r in OPERATOR_RULES if not any(res.endswith("/status") for res in r["resources"])]
    path = "/apis/rbac.authorization.k8s.io/v1/clusterroles/hpchub-operator"
    kube_admin.patch(path, {"rules": rules})


def test_sigkill_after_submission_adopts_single_job(operator: OperatorProcess,
                                                    kube_admin: KubeClient,
                                                    slurm: SlurmCluster) -> None:
    # The operator may submit but not write status: it dies between the two.
    _set_status_rights(kube_admin, allowed=False)
    try:
        uid = create_server(kube_admin, "lab-crash")["metadata"]["uid"]
        kube_admin.wait_for(lambda: bool(slurm_jobs(slurm, uid)), 60, "job submitted")
        operator.kill()
        assert "jobId" not in (get_server(kube_admin, "lab-crash").get("status") or {})
        # A killed operator cleans nothing up: its webhook key is below the stack's root
        # (removed with the stack), not left in /tmp.
        assert list((operator.root / "operator-tmp").glob("hpchub-webhook-*/tls.key"))
    finally:
        _set_status_rights(kube_admin, allowed=True)
    operator.start()
    obj = wait_phase(kube_admin, "lab-crash", RUNNING | FINAL, timeout=180)
    assert obj["status"]["phase"] == "Running", describe(kube_admin, "lab-crash")
    jobs = slurm_jobs(slurm, uid)
    assert len(jobs) == 1, jobs
    assert str(jobs[0]["job_id"]) == obj["status"]["jobId"]
    delete_server(kube_admin, "lab-crash")
    wait_gone(kube_admin, "lab-crash")


def test_restart_cancels_the_live_job_of_an_ended_server(operator: OperatorProcess,
                                                         kube_admin: KubeClient,
                                                         slurm: SlurmCluster) -> None:
    """The operator ended a server (Failed) but its cancel was lost (Slurm unreachable)
    and then the operator died: the job must not run on until its walltime."""
    uid = create_server(kube_admin, "lab-leftover")["metadata"]["uid"]
    obj = wait_phase(kube_admin, "lab-leftover", RUNNING | FINAL, timeout=180)
    assert obj["status"]["phase"] == "Running", describe(kube_admin, "lab-leftover")
    operator.kill()
    try:
        kube_admin.patch(f"{SERVERS}/lab-leftover/status", {"status": {
            "phase": "Failed", "reason": "StartTimeout", "message": "written by the test"}})
        assert job_state(slurm_jobs(slurm, uid)[0]) == "RUNNING"
    finally:
        operator.start()
    kube_admin.wait_for(
        lambda: all(job_state(j) not in ("RUNNING", "PENDING") for j in slurm_jobs(slurm, uid)),
        60, "the ended server's job cancelled")
    obj = get_server(kube_admin, "lab-leftover")
    assert obj["status"]["phase"] == "Failed", obj["status"]
    assert "cancelling it" in operator.logs()["operator.log"]
    delete_server(kube_admin, "lab-leftover")
    wait_gone(kube_admin, "lab-leftover")


def test_a_planted_token_secret_is_refused(operator: OperatorProcess, kube_admin: KubeClient,
                                          slurm: SlurmCluster) -> None:
    """Someone who may create Secrets puts a token they know under the name a standalone
    server's token Secret will have: the operator must not make it the server's token."""
    planted = base64.b64encode(b"known-to-the-attacker").decode()
    kube_admin.create(f"/api/v1/namespaces/{NS}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lab-planted-token"},
        "data": {"token": planted}})
    try:
        uid = create_server(kube_admin, "lab-planted")["metadata"]["uid"]
        obj = wait_phase(kube_admin, "lab-planted", RUNNING | FINAL, timeout=60)
        st = obj["status"]
        assert st["phase"] == "Failed", describe(kube_admin, "lab-planted")
        assert "lab-planted-token exists and does not belong" in st["message"], st
        assert not slurm_jobs(slurm, uid)  # nothing was submitted with that token
    finally:
        kube_admin.delete(f"/api/v1/namespaces/{NS}/secrets/lab-planted-token")
    delete_server(kube_admin, "lab-planted")
    wait_gone(kube_admin, "lab-planted")


def test_twenty_servers_one_query_per_interval(operator: OperatorProcess,
                                               kube_admin: KubeClient,
                                               slurm: SlurmCluster) -> None:
    names = [f"class-{i:02d}" for i in range(20)]
    for name in names:
        create_server(kube_admin, name, user=("alice", "bob", "carol")[len(name) % 3])
    for name in names:
        obj = wait_phase(kube_admin, name, RUNNING | FINAL, timeout=300)
        assert obj["status"]["phase"] == "Running", describe(kube_admin, name)
    # All steady: count what the operator asks of Slurm over a window.
    before_polls = metric_value(operator.metrics(), "hpchub_slurm_polls_total",
                                {"cluster": "local"})
    before_rpc = slurm.sdiag_counts().get("REQUEST_JOB_INFO", 0)
    before_rest = slurm.rest_request_count("/jobs")
    window, slow = 12.0, 3.0
    time.sleep(window)  # a measurement window, not a wait for a condition
    polls = metric_value(operator.metrics(), "hpchub_slurm_polls_total",
                         {"cluster": "local"}) - before_polls
    rpcs = slurm.sdiag_counts().get("REQUEST_JOB_INFO", 0) - before_rpc
    rest = slurm.rest_request_count("/jobs") - before_rest
    intervals = window / slow
    assert 1 <= polls <= intervals * 1.2 + 1, polls
    assert rpcs <= polls + 1, (rpcs, polls)
    assert rest <= polls + 1, (rest, polls)
    for name in names:
        delete_server(kube_admin, name)
    for name in names:
        wait_gone(kube_admin, name, timeout=120)
    text = operator.metrics()
    for name in names:
        labels = {"namespace": NS, "name": name}
        assert metric_value(text, "hpchub_handler_success_total",
                            {"handler": "create", **labels}) == 1, name
        assert metric_value(text, "hpchub_handler_success_total",
                            {"handler": "delete", **labels}) == 1, name


def test_time_limit_reached_is_stopped_within_a_poll(operator: OperatorProcess,
                                                     kube_admin: KubeClient,
                                                     slurm: SlurmCluster,
                                                     time_limited: str) -> None:
    uid = get_server(kube_admin, time_limited)["metadata"]["uid"]
    # Watch Slurm ourselves: when does it first report the job as ended?
    finished_at = 0.0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not finished_at:
        jobs = slurm_jobs(slurm, uid)
        if jobs and job_state(jobs[0]) in ("TIMEOUT", "COMPLETED", "FAILED", "CANCELLED"):
            finished_at = time.time()
        else:
            time.sleep(0.3)
    assert finished_at, describe(kube_admin, time_limited)
    obj = wait_phase(kube_admin, time_limited, FINAL, timeout=30)
    st = obj["status"]
    assert st["phase"] == "Stopped" and st["reason"] == "TimeLimit", describe(
        kube_admin, time_limited)
    assert job_state(slurm_jobs(slurm, uid)[0]) == "TIMEOUT"
    stopped = dt.datetime.fromisoformat(st["stoppedAt"].replace("Z", "+00:00")).timestamp()
    slow_poll = 3.0
    # stoppedAt has one-second resolution; jitter is 10 %.
    assert stopped - finished_at <= slow_poll * 1.1 + 1, (stopped, finished_at)
