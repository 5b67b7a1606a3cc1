"""Login-node setup shared by the operator's and the hub's login-node tests: HPCClusters
whose login node is the stack's sshd (one-shot certificates from a CA held in a Secret, host
key checked, a world-writable state directory) and Slurm driven through ``sudo -u``; and what
``ps`` shows of a login-node server."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hpchub_api import constants as c
from hpchub_stack.base import make_root, remove_root
from hpchub_stack.bootstrap import CLUSTERS, OPERATOR_NS, ensure, launcher_path
from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.slurm import SlurmCluster
from hpchub_stack.sshd import SSHServer, generate_ed25519

from .operator_helpers import poll_until

LOGIN_NODE = "login1"


def login_cluster(
    name: str,
    slurm: SlurmCluster,
    sshd: SSHServer,
    callback_url: str,
    state_dir: Path,
    known_hosts: str,
) -> dict[str, Any]:
    """An HPCCluster with one login node (the stack's sshd) and Slurm through sudo."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.CLUSTER_KIND,
        "metadata": {"name": name},
        "spec": {
            "slurm": {
                "backend": "sudo",
                "slurmConf": str(slurm.conf_path),
                "monitorUser": "carol",
                "fastPollSeconds": 1,
                "slowPollSeconds": 3,
            },
            "login": {
                "nodes": [{"name": LOGIN_NODE, "host": sshd.host, "port": sshd.port}],
                "sshCaSecret": {"name": "ssh-user-ca", "namespace": OPERATOR_NS, "key": "ca"},
                "knownHosts": known_hosts,
                "monitorUser": "carol",
                "stateDirectory": str(state_dir),
                "limits": {"memory": "8G", "maxProcesses": 4096, "serversPerUser": 1},
            },
            "launcher": {"command": launcher_path(), "startTimeoutSeconds": 120},
            "policy": {
                "partitions": slurm.partition_names,
                "apps": ["jupyterlab"],
                "maxServersPerUser": 30,
            },
            "defaults": {"partition": "compute", "timeLimit": "30"},
            "callbackUrl": callback_url,
        },
    }


@contextmanager
def login_clusters_applied(
    kube_admin: KubeClient,
    operator: OperatorProcess,
    slurm: SlurmCluster,
    sshd: SSHServer,
    names: Sequence[str],
    wrong_host_key: Sequence[str] = (),
) -> Iterator[Path]:
    """Apply an HPCCluster per name in ``names`` (trusting the sshd's host key) and per name
    in ``wrong_host_key`` (trusting another key); yield the login node's state directory;
    delete the clusters afterwards."""
    root = make_root("hpchub-login-")
    state_dir = root / "state"
    state_dir.mkdir()
    state_dir.chmod(0o1777)  # what the administrator makes on each login node
    ensure(
        kube_admin,
        f"/api/v1/namespaces/{OPERATOR_NS}/secrets",
        {
            "metadata": {"name": "ssh-user-ca"},
            "type": "Opaque",
            "data": {"ca": base64.b64encode(sshd.ca_private_key_path.read_bytes()).decode()},
        },
    )
    known = {name: sshd.known_hosts_line for name in names}
    if wrong_host_key:
        other = generate_ed25519(root / "other_host_key", "not-the-login-node").split()
        known.update(
            (name, f"[{sshd.host}]:{sshd.port} {other[0]} {other[1]}") for name in wrong_host_key
        )
    for name, known_hosts in known.items():
        ensure(
            kube_admin,
            CLUSTERS,
            login_cluster(name, slurm, sshd, operator.callback_url, state_dir, known_hosts),
        )
    try:
        yield state_dir
    finally:
        for name in known:
            kube_admin.delete(f"{CLUSTERS}/{name}")
        remove_root(root)


def login_pid(status: dict[str, Any]) -> int:
    """The pid of a login-node server's wrapper, from its status.jobId (login:<node>:<pid>)."""
    return int(status["jobId"].rsplit(":", 1)[1])


def processes_of(pid: int, uid: str) -> list[str]:
    """Processes in the server's session (the wrapper's pid) or carrying its tag."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,sid=,user=,args="], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        fields = line.split(None, 3)
        if len(fields) == 4 and (fields[1] == str(pid) or c.job_comment(uid) in fields[3]):
            found.append(line[:160])
    return found


def wait_no_processes(pid: int, uid: str, timeout: float = 30) -> None:
    poll_until(
        lambda: not processes_of(pid, uid),
        timeout,
        lambda: f"processes left behind: {processes_of(pid, uid)}",
    )
