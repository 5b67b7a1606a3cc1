"""Login-node servers end to end: the real operator, an HPCCluster whose login node is the
stack's sshd (one-shot certificates from a CA held in a Secret, host key checked), and its
Slurm part driven through ``sudo -u``.

A server reaches Running, answers HTTP, is stopped and leaves no process behind; a process
that dies is reported within one poll; a changed host key makes the operator refuse to
connect and say why in the server's status.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.slurm import SlurmCluster
from hpchub_stack.sshd import SSHServer

from .login_helpers import (
    LOGIN_NODE,
    login_clusters_applied,
    login_pid,
    processes_of,
    wait_no_processes,
)
from .operator_helpers import (
    NS,
    create_server,
    delete_server,
    describe,
    http_status,
    wait_gone,
    wait_phase,
)

CLUSTER = "login-test"
BAD_KEY_CLUSTER = "login-badkey"
FINAL = {"Stopped", "Failed"}


@pytest.fixture(scope="module")
def login_clusters(operator: OperatorProcess, kube_admin: KubeClient, slurm: SlurmCluster,
                   sshd: SSHServer) -> Iterator[Path]:
    """The two HPCClusters of this module; yields the login node's state directory."""
    with login_clusters_applied(kube_admin, operator, slurm, sshd, [CLUSTER],
                                wrong_host_key=[BAD_KEY_CLUSTER]) as state_dir:
        yield state_dir


def server_token(kube: KubeClient, obj: dict[str, Any]) -> str:
    secret = kube.get(f"/api/v1/namespaces/{NS}/secrets/{obj['status']['tokenSecret']}")
    return base64.b64decode(secret["data"]["token"]).decode()


def login_server(kube: KubeClient, name: str, cluster: str = CLUSTER) -> dict[str, Any]:
    return create_server(kube, name, cluster=cluster, target="login",
                         login={"node": LOGIN_NODE})


def test_login_server_runs_answers_and_leaves_nothing_behind(
        login_clusters: Path, kube_admin: KubeClient) -> None:
    created = login_server(kube_admin, "login-lab")
    uid = created["metadata"]["uid"]
    try:
        obj = wait_phase(kube_admin, "login-lab", {"Running"} | FINAL, timeout=180)
        assert obj["status"]["phase"] == "Running", describe(kube_admin, "login-lab")
        st = obj["status"]
        assert st["jobId"].startswith("login:login1:") and st["node"] == "login1"
        pid = login_pid(st)
        assert http_status(st["url"] + "api/status", server_token(kube_admin, obj)) == 200
        assert processes_of(pid, uid), "the server's processes are not visible"
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert "Max address space         8589934592" in limits  # prlimit on this node
    finally:
        delete_server(kube_admin, "login-lab")
    wait_gone(kube_admin, "login-lab", timeout=60)
    wait_no_processes(pid, uid)


def test_a_dead_login_server_is_reported_within_one_poll(
        login_clusters: Path, kube_admin: KubeClient) -> None:
    login_server(kube_admin, "login-dies")
    try:
        obj = wait_phase(kube_admin, "login-dies", {"Running"} | FINAL, timeout=180)
        assert obj["status"]["phase"] == "Running", describe(kube_admin, "login-dies")
        pid = login_pid(obj["status"])
        os.killpg(pid, signal.SIGKILL)  # the node kills it (OOM killer, admin, reboot)
        began = time.monotonic()
        obj = wait_phase(kube_admin, "login-dies", FINAL, timeout=30)
        assert time.monotonic() - began < 10, "not reported within one poll"
        assert obj["status"]["phase"] == "Failed", describe(kube_admin, "login-dies")
    finally:
        delete_server(kube_admin, "login-dies")
    wait_gone(kube_admin, "login-dies", timeout=60)


def test_a_changed_host_key_is_refused_and_said_in_status(
        login_clusters: Path, kube_admin: KubeClient) -> None:
    login_server(kube_admin, "login-badkey", cluster=BAD_KEY_CLUSTER)
    try:
        obj = wait_phase(kube_admin, "login-badkey", FINAL, timeout=60)
        st = obj["status"]
        assert st["phase"] == "Failed", describe(kube_admin, "login-badkey")
        assert "host key" in st["message"] and "refusing to connect" in st["message"], st
        assert not list(login_clusters.glob("alice/*badkey*"))
    finally:
        delete_server(kube_admin, "login-badkey")
    wait_gone(kube_admin, "login-badkey", timeout=60)
