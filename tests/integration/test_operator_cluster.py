"""HPCCluster status written by the operator, and abuse of the real callback endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import urllib.error
import urllib.request
from typing import Any

import pytest

from hpchub_api import constants as c
from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.process import free_port
from hpchub_stack.slurm import SlurmCluster

from .fixtures_operator import OPERATOR_NS
from .operator_helpers import create_server, delete_server, metric_value, wait_gone, wait_phase

CLUSTERS = f"/apis/{c.API_VERSION}/{c.CLUSTER_PLURAL}"


def test_cluster_status_reports_version_and_partitions(operator: OperatorProcess,
                                                       kube_admin: KubeClient,
                                                       slurm: SlurmCluster) -> None:
    status = kube_admin.get(f"{CLUSTERS}/local")["status"]
    assert status["reachable"] is True
    assert status["slurmVersion"].startswith("22.05")
    parts = {p["name"]: p for p in status["partitions"]}
    assert set(parts) == set(slurm.partition_names)
    assert parts["compute"]["isDefault"] is True
    assert parts["compute"]["cpus"] >= 1
    assert any("fake" in p.get("gpuTypes", []) for p in parts.values()), parts


def test_unreachable_cluster_is_reported_honestly(operator: OperatorProcess,
                                                  kube_admin: KubeClient) -> None:
    body = {"apiVersion": c.API_VERSION, "kind": c.CLUSTER_KIND,
            "metadata": {"name": "dead-cluster"},
            "spec": {"slurm": {"backend": "rest",
                               "restUrl": f"http://127.0.0.1:{free_port()}",
                               "jwtKeySecret": {"name": "slurm-jwt", "namespace": OPERATOR_NS,
                                                "key": "jwt.key"}}}}
    kube_admin.create(CLUSTERS, body)
    try:
        kube_admin.wait_for(
            lambda: "reachable" in (kube_admin.get(f"{CLUSTERS}/dead-cluster").get("status")
                                    or {}), 60, "dead-cluster status")
        status = kube_admin.get(f"{CLUSTERS}/dead-cluster")["status"]
        assert status["reachable"] is False
        assert "unreachable" in status["message"]
    finally:
        kube_admin.delete(f"{CLUSTERS}/dead-cluster")


def _token(key: bytes, uid: str) -> str:
    return hmac.new(key, uid.encode(), hashlib.sha256).hexdigest()


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def two_servers(operator: OperatorProcess, kube_admin: KubeClient) -> Any:
    """Two stopped servers: known to the operator, never running anything."""
    uids = []
    for name in ("abuse-a", "abuse-b"):
        uids.append(create_server(kube_admin, name, stop=True)["metadata"]["uid"])
        wait_phase(kube_admin, name, {"Stopped"})
    yield uids
    for name in ("abuse-a", "abuse-b"):
        delete_server(kube_admin, name)
        wait_gone(kube_admin, name)


def test_callback_abuses_are_refused_and_counted(operator: OperatorProcess,
                                                 kube_admin: KubeClient,
                                                 two_servers: list[str]) -> None:
    secret = kube_admin.get(f"/api/v1/namespaces/{OPERATOR_NS}/secrets/hpchub-callback-key")
    key = base64.b64decode(secret["data"]["key"])
    a, b = two_servers
    stranger = "0b7c5f8e-1111-4222-8333-944455556666"
    good = {"Authorization": f"Bearer {_token(key, a)}", "Content-Type": "application/json"}

    def url(uid: str) -> str:
        return f"{operator.callback_url}/v1/servers/{uid}/report"

    port_ok = json.dumps({"port": 30000}).encode()
    abuses: list[tuple[str, str, bytes, dict[str, str]]] = [
        ("no auth", a, port_ok, {"Content-Type": "application/json"}),
        ("basic auth", a, port_ok, {"Authorization": "Basic YWxpY2U6eA=="}),
        ("malformed token", a, port_ok, {"Authorization": "Bearer not-hex"}),
        ("wrong token", a, port_ok, {"Authorization": f"Bearer {secrets.token_hex(32)}"}),
        ("replay for another server", b, port_ok, good),
        ("unknown server", stranger, port_ok,
         {"Authorization": f"Bearer {_token(key, stranger)}"}),
        ("host smuggled in", a, json.dumps({"port": 30000, "host": "evil.example"}).encode(),
         good),
        ("port as string", a, json.dumps({"port": "30000"}).encode(), good),
        ("privileged port", a, json.dumps({"port": 22}).encode(), good),
        ("port out of range", a, json.dumps({"port": 70000}).encode(), good),
        ("port and failure", a, json.dumps({"port": 30000, "failure": "x"}).encode(), good),
        ("not json", a, b"port=30000", good),
        ("huge body", a, json.dumps({"failure": "x" * 10000}).encode(), good),
    ]
    before = _rejections(operator)
    for what, uid, body, headers in abuses:
        status = _post(url(uid), body, headers)
        assert 400 <= status < 500, (what, status)
    assert _rejections(operator) - before == len(abuses)
    # None of it changed the servers.
    for name in ("abuse-a", "abuse-b"):
        st = kube_admin.get(f"/apis/{c.API_VERSION}/namespaces/default/{c.SERVER_PLURAL}/"
                            f"{name}")["status"]
        assert st["phase"] == "Stopped" and "url" not in st and "host" not in st


def _rejections(operator: OperatorProcess) -> float:
    total = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith("hpchub_callback_rejections_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_expose_servers_by_phase(operator: OperatorProcess) -> None:
    text = operator.metrics()
    assert "hpchub_servers{" in text
    assert metric_value(text, "hpchub_slurm_polls_total", {"cluster": "local"}) >= 0
    assert "hpchub_slurm_request_seconds_bucket" in text
