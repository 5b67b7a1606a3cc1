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
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpchub_api import constants as c
from hpchub_stack.base import make_root, remove_root
from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.slurm import SlurmCluster
from hpchub_stack.sshd import SSHServer, generate_ed25519

from .fixtures_operator import CLUSTERS, OPERATOR_NS, ensure, launcher_path
from .operator_helpers import (
    NS,
    create_server,
    delete_server,
    describe,
    http_status,
    poll_until,
    wait_gone,
    wait_phase,
)

CLUSTER = "login-test"
BAD_KEY_CLUSTER = "login-badkey"
FINAL = {"Stopped", "Failed"}


def login_cluster(name: str, slurm: SlurmCluster, sshd: SSHServer, callback_url: str,
                  state_dir: Path, known_hosts: str) -> dict[str, Any]:
    """An HPCCluster with one login node (the stack's sshd) and Slurm through sudo."""
    return {
        "apiVersion": c.API_VERSION, "kind": c.CLUSTER_KIND, "metadata": {"name": name},
        "spec": {
            "slurm": {"backend": "sudo", "slurmConf": str(slurm.conf_path),
                      "monitorUser": "carol", "fastPollSeconds": 1, "slowPollSeconds": 3},
            "login": {
                "nodes": [{"name": "login1", "host": sshd.host, "port": sshd.port}],
                "sshCaSecret": {"name": "ssh-user-ca", "namespace": OPERATOR_NS,
                                "key": "ca"},
                "knownHosts": known_hosts,
                "monitorUser": "carol",
                "stateDirectory": str(state_dir),
                "limits": {"memory": "8G", "maxProcesses": 4096, "serversPerUser": 1},
            },
            "launcher": {"command": launcher_path(), "startTimeoutSeconds": 120},
            "policy": {"partitions": slurm.partition_names, "apps": ["jupyterlab"],
                       "maxServersPerUser": 30},
            "defaults": {"partition": "compute", "timeLimit": "30"},
            "callbackUrl": callback_url,
        },
    }


@pytest.fixture(scope="module")
def login_clusters(operator: OperatorProcess, kube_admin: KubeClient, slurm: SlurmCluster,
                   sshd: SSHServer) -> Iterator[Path]:
    """The two HPCClusters of this module; yields the login node's state directory."""
    root = make_root("hpchub-login-")
    state_dir = root / "state"
    state_dir.mkdir()
    state_dir.chmod(0o1777)  # what the administrator makes on each login node
    ensure(kube_admin, f"/api/v1/namespaces/{OPERATOR_NS}/secrets", {
        "metadata": {"name": "ssh-user-ca"}, "type": "Opaque",
        "data": {"ca": base64.b64encode(sshd.ca_private_key_path.read_bytes()).decode()}})
    other = generate_ed25519(root / "other_host_key", "not-the-login-node").split()
    wrong_known_hosts = f"[{sshd.host}]:{sshd.port} {other[0]} {other[1]}"
    for name, known in ((CLUSTER, sshd.known_hosts_line),
                        (BAD_KEY_CLUSTER, wrong_known_hosts)):
        ensure(kube_admin, CLUSTERS, login_cluster(name, slurm, sshd, operator.callback_url,
                                                   state_dir, known))
    yield state_dir
    for name in (CLUSTER, BAD_KEY_CLUSTER):
        kube_admin.delete(f"{CLUSTERS}/{name}")
    remove_root(root)


def server_token(kube: KubeClient, obj: dict[str, Any]) -> str:
    secret = kube.get(f"/api/v1/namespaces/{NS}/secrets/{obj['status']['tokenSecret']}")
    return base64.b64decode(secret["data"]["token"]).decode()


def processes_of(pid: int, uid: str) -> list[str]:
    """Processes in the server's session (the wrapper's pid) or carrying its tag."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,user=,args="], capture_output=True,
                         text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split(None, 3)
        if len(fields) == 4 and (fields[1] == str(pid) or c.job_comment(uid) in fields[3]):
            found.append(line[:160])
    return found


def wait_no_processes(pid: int, uid: str, timeout: float = 30) -> None:
    poll_until(lambda: not processes_of(pid, uid), timeout,
               lambda: f"processes left behind: {processes_of(pid, uid)}")


def login_server(kube: KubeClient, name: str, cluster: str = CLUSTER) -> dict[str, Any]:
    return create_server(kube, name, cluster=cluster, target="login",
                         login={"node": "login1"})


def test_login_server_runs_answers_and_leaves_nothing_behind(
        login_clusters: Path, kube_admin: KubeClient) -> None:
    created = login_server(kube_admin, "login-lab")
    uid = created["metadata"]["uid"]
    try:
        obj = wait_phase(kube_admin, "login-lab", {"Running"} | FINAL, timeout=180)
        assert obj["status"]["phase"] == "Running", describe(kube_admin, "login-lab")
        st = obj["status"]
        assert st["jobId"].startswith("login:login1:") and st["node"] == "login1"
        pid = int(st["jobId"].rsplit(":", 1)[1])
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
        pid = int(obj["status"]["jobId"].rsplit(":", 1)[1])
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
