"""The CRDs on a real API server: installed, valid objects accepted, malformed ones refused
with a message that names the field, status writable only through the subresource."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hpchub_api import constants as c
from hpchub_stack.kubeclient import KubeClient, KubeError

NS = "default"
SERVERS = f"/apis/{c.API_VERSION}/namespaces/{NS}/{c.SERVER_PLURAL}"
CLUSTERS = f"/apis/{c.API_VERSION}/{c.CLUSTER_PLURAL}"


def server(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "user": "alice", "cluster": "local", "target": "slurm",
        "slurm": {"partition": "compute", "account": "proj-astro", "timeLimit": "1:00:00",
                  "gpus": 0, "cpusPerTask": 2, "memory": "4G"},
        "environment": {"modules": ["python/3.11"], "condaEnv": "base",
                        "workingDirectory": "$WORK/notebooks",
                        "variables": [{"name": "OMP_NUM_THREADS", "value": "2"}]},
    }
    merged = _merge(base, spec)
    return {"apiVersion": c.API_VERSION, "kind": c.SERVER_KIND,
            "metadata": {"name": name}, "spec": merged}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def cluster(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "slurm": {"backend": "rest", "restUrl": "http://127.0.0.1:6820",
                  "jwtKeySecret": {"name": "slurm-jwt", "namespace": "hpchub", "key": "jwt.key"}},
        "policy": {"partitions": ["compute"], "accounts": ["proj-astro"], "maxGpus": 4},
        "hubUrl": "http://127.0.0.1:8000/hub",
    }
    return {"apiVersion": c.API_VERSION, "kind": c.CLUSTER_KIND,
            "metadata": {"name": name}, "spec": _merge(base, spec)}


def test_crds_installed(kube_admin: KubeClient) -> None:
    names = {i["metadata"]["name"] for i in kube_admin.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]}
    assert {f"{c.SERVER_PLURAL}.{c.GROUP}", f"{c.CLUSTER_PLURAL}.{c.GROUP}"} <= names


def test_valid_objects_accepted_with_defaults(kube_admin: KubeClient) -> None:
    created = kube_admin.create(SERVERS, server("valid-one"))
    try:
        assert created["spec"]["app"] == "jupyterlab"  # schema default applied
        assert created["spec"]["stop"] is False
        hpcc = kube_admin.create(CLUSTERS, cluster("valid-cluster"))
        assert hpcc["spec"]["isolation"] == "off"
        kube_admin.delete(f"{CLUSTERS}/valid-cluster")
    finally:
        kube_admin.delete(f"{SERVERS}/valid-one")


def test_printer_columns_for_humans(kube_admin: KubeClient) -> None:
    crd = kube_admin.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                         f"{c.SERVER_PLURAL}.{c.GROUP}")
    cols = {col["name"] for col in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"User", "Target", "Phase", "Node", "Age", "URL"} <= cols
    kube_admin.create(SERVERS, server("table-one"))
    try:
        table = kube_admin.request(
            "GET", f"{SERVERS}/table-one",
            params={"includeObject": "None"},
        )
        assert table["spec"]["user"] == "alice"
    finally:
        kube_admin.delete(f"{SERVERS}/table-one")


BAD_SERVERS: list[tuple[str, dict[str, Any], str]] = [
    ("bad-target", {"target": "cloud"}, "spec.target"),
    ("semicolon-partition", {"slurm": {"partition": "compute;rm -rf /"}}, "spec.slurm.partition"),
    ("newline-partition", {"slurm": {"partition": "compute\n#SBATCH --uid=0"}},
     "spec.slurm.partition"),
    ("dollar-account", {"slurm": {"account": "$(id)"}}, "spec.slurm.account"),
    ("backtick-account", {"slurm": {"account": "`id`"}}, "spec.slurm.account"),
    ("negative-gpus", {"slurm": {"gpus": -1}}, "spec.slurm.gpus"),
    ("huge-gpus", {"slurm": {"gpus": 100000}}, "spec.slurm.gpus"),
    ("bad-time", {"slurm": {"timeLimit": "forever"}}, "spec.slurm.timeLimit"),
    ("bad-time-minutes", {"slurm": {"timeLimit": "1:99:00"}}, "spec.slurm.timeLimit"),
    ("long-partition", {"slurm": {"partition": "p" * 200}}, "spec.slurm.partition"),
    ("bad-user-option", {"user": "-oProxyCommand=x"}, "spec.user"),
    ("bad-user-space", {"user": "alice bob"}, "spec.user"),
    ("long-user", {"user": "a" * 64}, "spec.user"),
    ("zero-nodes", {"slurm": {"nodes": 0}}, "spec.slurm.nodes"),
    ("bad-memory", {"slurm": {"memory": "4GB; reboot"}}, "spec.slurm.memory"),
    ("bad-module", {"environment": {"modules": ["python && curl x"]}},
     "spec.environment.modules"),
    ("bad-conda", {"environment": {"condaEnv": "base; rm"}}, "spec.environment.condaEnv"),
    ("relative-workdir", {"environment": {"workingDirectory": "../../etc"}},
     "spec.environment.workingDirectory"),
    ("newline-env-value",
     {"environment": {"variables": [{"name": "A", "value": "x\nexport B=1"}]}},
     "spec.environment.variables"),
    ("bad-env-name", {"environment": {"variables": [{"name": "A-B", "value": "x"}]}},
     "spec.environment.variables"),
    ("bad-app", {"app": "Jupyter Lab"}, "spec.app"),
    ("bad-cluster-ref", {"cluster": "Local_Cluster"}, "spec.cluster"),
    ("bad-constraint", {"slurm": {"constraint": "gpu$(id)"}}, "spec.slurm.constraint"),
    ("bad-login-node", {"target": "login", "login": {"node": "node1;id"}}, "spec.login.node"),
    ("stop-not-bool", {"stop": "yes"}, "spec.stop"),
    ("duplicate-env", {"environment": {"variables": [{"name": "A", "value": "1"},
                                                     {"name": "A", "value": "2"}]}},
     "spec.environment.variables"),
]


@pytest.mark.parametrize(("name", "spec", "field"), BAD_SERVERS, ids=[b[0] for b in BAD_SERVERS])
def test_malformed_server_rejected(kube_admin: KubeClient, name: str, spec: dict[str, Any],
                                   field: str) -> None:
    with pytest.raises(KubeError) as err:
        kube_admin.create(SERVERS, server(name, **spec))
    assert err.value.status == 422, err.value.body
    assert field in err.value.message, err.value.message


def test_missing_user_rejected(kube_admin: KubeClient) -> None:
    body = server("no-user")
    del body["spec"]["user"]
    with pytest.raises(KubeError) as err:
        kube_admin.create(SERVERS, body)
    assert "spec.user" in err.value.message


BAD_CLUSTERS: list[tuple[str, dict[str, Any], str]] = [
    ("bad-backend", {"slurm": {"backend": "telnet"}}, "spec.slurm.backend"),
    ("bad-rest-url", {"slurm": {"restUrl": "file:///etc/passwd"}}, "spec.slurm.restUrl"),
    ("bad-policy-partition", {"policy": {"partitions": ["gpu;reboot"]}},
     "spec.policy.partitions"),
    ("bad-isolation", {"isolation": "maybe"}, "spec.isolation"),
    ("bad-port-range", {"launcher": {"portRange": {"min": 22}}}, "spec.launcher.portRange.min"),
    ("bad-max-time", {"policy": {"maxTimeLimit": "1 day"}}, "spec.policy.maxTimeLimit"),
]


@pytest.mark.parametrize(("name", "spec", "field"), BAD_CLUSTERS,
                         ids=[b[0] for b in BAD_CLUSTERS])
def test_malformed_cluster_rejected(kube_admin: KubeClient, name: str, spec: dict[str, Any],
                                    field: str) -> None:
    with pytest.raises(KubeError) as err:
        kube_admin.create(CLUSTERS, cluster(name, **spec))
    assert err.value.status == 422, err.value.body
    assert field in err.value.message, err.value.message


def test_status_only_through_subresource(kube_admin: KubeClient) -> None:
    # The operator (running for the whole session) reconciles this object too, so each
    # check reads the object the API server returned for our own write, not a later GET.
    kube_admin.create(SERVERS, server("status-one"))
    try:
        # A write to the main resource drops status changes...
        after = kube_admin.patch(f"{SERVERS}/status-one", {"status": {"phase": "Running"}})
        assert after.get("status", {}).get("phase") != "Running", after.get("status")
        # ...and the status subresource ignores spec changes.
        obj = kube_admin.patch(f"{SERVERS}/status-one/status",
                               {"spec": {"user": "bob"}, "status": {"phase": "Queued"}})
        assert obj["status"]["phase"] == "Queued"
        assert obj["spec"]["user"] == "alice"
        assert kube_admin.get(f"{SERVERS}/status-one")["spec"]["user"] == "alice"
        with pytest.raises(KubeError) as err:
            kube_admin.patch(f"{SERVERS}/status-one/status", {"status": {"phase": "Dancing"}})
        assert "status.phase" in err.value.message
    finally:
        kube_admin.delete(f"{SERVERS}/status-one")
