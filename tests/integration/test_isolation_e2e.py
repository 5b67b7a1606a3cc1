"""Isolation through the whole system: an HPCCluster with ``isolation: required``, a
JupyterServer on it through the real operator and Slurm. The operator-published URL answers;
the app's own port inside the sandbox is reachable by nobody else on the node."""

from __future__ import annotations

import base64
import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.slurm import SlurmCluster

from .fixtures_operator import CLUSTERS, cluster_manifest, ensure
from .operator_helpers import (
    NS,
    create_server,
    delete_server,
    describe,
    http_status,
    wait_gone,
    wait_phase,
)
from .test_isolation import node_addresses, port_option, probe_as_bob

ISOLATED = "isolated"


@pytest.fixture(scope="module")
def isolated_cluster(operator: OperatorProcess, kube_admin: KubeClient,
                     slurm: SlurmCluster) -> Iterator[str]:
    body = copy.deepcopy(cluster_manifest(slurm, operator.callback_url))
    body["metadata"]["name"] = ISOLATED
    body["spec"]["isolation"] = "required"
    body["spec"]["displayName"] = "Local cluster, isolated servers"
    ensure(kube_admin, CLUSTERS, body)
    kube_admin.wait_for(lambda: bool((kube_admin.get(f"{CLUSTERS}/{ISOLATED}")
                                      .get("status") or {}).get("reachable")), 60,
                        "isolated cluster reachable")
    yield ISOLATED
    kube_admin.delete(f"{CLUSTERS}/{ISOLATED}")


def _jupyter_pids_of(uid: str) -> list[int]:
    """jupyter-lab processes whose environment names this server."""
    marker = f"HPCHUB_SERVER_UID={uid}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"jupyter-lab") for a in cmd[:2]) and marker in env:
            found.append(int(proc.name))
    return found


def test_isolated_server_is_reachable_only_through_its_published_url(
        isolated_cluster: str, kube_admin: KubeClient) -> None:
    uid = create_server(kube_admin, "lab-isolated", cluster=isolated_cluster)["metadata"]["uid"]
    try:
        obj = wait_phase(kube_admin, "lab-isolated", {"Running", "Stopped", "Failed"},
                         timeout=180)
        assert obj["status"]["phase"] == "Running", describe(kube_admin, "lab-isolated")
        url = obj["status"]["url"]
        secret = kube_admin.get(f"/api/v1/namespaces/{NS}/secrets/"
                                f"{obj['status']['tokenSecret']}")
        token = base64.b64decode(secret["data"]["token"]).decode()
        assert http_status(url + "api/status", token) == 200
        published = int(obj["status"]["port"])
        pids = _jupyter_pids_of(uid)
        assert pids, "no jupyter-lab process for this server"
        inner = port_option(pids[0])
        assert inner != published
        seen = probe_as_bob([(h, inner) for h in node_addresses()],
                            [url + "api/status"], token)
        assert all(v != "open" for v in seen["connect"].values()), seen
        assert seen["http"][url + "api/status"] == 200, seen  # the published URL works
        ps = subprocess.run(["ps", "-o", "args=", "-p", str(pids[0])], capture_output=True,
                            text=True, check=False)
        assert "jupyter-lab" in ps.stdout
    finally:
        delete_server(kube_admin, "lab-isolated")
        wait_gone(kube_admin, "lab-isolated")
    assert not _jupyter_pids_of(uid)
