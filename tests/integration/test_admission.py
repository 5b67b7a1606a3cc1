"""The admission webhook on a real API server: JupyterServers that pass the CRD schema but
break a cluster's policy or the identity rules are refused with a message naming the field;
the spec cannot change after creation except setting spec.stop."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from hpchub_api import constants as c
from hpchub_stack.kubeclient import KubeClient, KubeError
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.slurm import SlurmCluster

from .fixtures_operator import ADMIN_GROUP, CLUSTERS, HUB_SERVICE_ACCOUNT, OPERATOR_NS, ensure

NS = "default"
SERVERS = f"/apis/{c.API_VERSION}/namespaces/{NS}/{c.SERVER_PLURAL}"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
LOGIN_CLUSTER = "with-login"
OTHER_SA = "system:serviceaccount:default:builder"
AUTHENTICATED = ("system:authenticated",)
SA_GROUPS = ("system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NS}",
             "system:authenticated")


def manifest(name: str, user: str = "alice", **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"user": user, "cluster": "local", "target": "slurm",
                            "slurm": {"partition": "compute", "timeLimit": "30"}}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return {"apiVersion": c.API_VERSION, "kind": c.SERVER_KIND, "metadata": {"name": name},
            "spec": spec}


@pytest.fixture(scope="module")
def users(operator: OperatorProcess, kube_admin: KubeClient) -> dict[str, KubeClient]:
    """Plain Kubernetes identities with RBAC to manage JupyterServers in the namespace (so
    their requests reach the operator's webhook), impersonated by the admin client."""
    ensure(kube_admin, f"{RBAC}/namespaces/{NS}/roles", {
        "metadata": {"name": "jupyterserver-editor"},
        "rules": [{"apiGroups": [c.GROUP], "resources": [c.SERVER_PLURAL],
                   "verbs": ["get", "list", "watch", "create", "patch", "update",
                             "delete"]}]})
    ensure(kube_admin, f"{RBAC}/namespaces/{NS}/rolebindings", {
        "metadata": {"name": "jupyterserver-editor"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "jupyterserver-editor"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": ADMIN_GROUP},
            {"kind": "ServiceAccount", "name": "hub", "namespace": OPERATOR_NS},
            {"kind": "ServiceAccount", "name": "builder", "namespace": NS},
        ]})
    return {
        "alice": kube_admin.as_user("alice", AUTHENTICATED),
        "hub": kube_admin.as_user(HUB_SERVICE_ACCOUNT, SA_GROUPS),
        "builder": kube_admin.as_user(OTHER_SA, SA_GROUPS),
        "dave-admin": kube_admin.as_user("dave", (ADMIN_GROUP,)),
    }


@pytest.fixture(scope="module")
def login_cluster(operator: OperatorProcess, kube_admin: KubeClient, slurm: SlurmCluster
                  ) -> Iterator[str]:
    """A second HPCCluster with login nodes and a stricter policy."""
    local = kube_admin.get(f"{CLUSTERS}/local")
    spec = copy.deepcopy(local["spec"])
    spec["login"] = {"nodes": [{"name": "login1", "host": "127.0.0.1"}]}
    spec["policy"] = {**spec["policy"], "accounts": ["proj-astro"], "maxMemory": "8G",
                      "maxServersPerUser": 1}
    ensure(kube_admin, CLUSTERS, {"apiVersion": c.API_VERSION, "kind": c.CLUSTER_KIND,
                                  "metadata": {"name": LOGIN_CLUSTER}, "spec": spec})
    yield LOGIN_CLUSTER
    kube_admin.delete(f"{CLUSTERS}/{LOGIN_CLUSTER}")


@pytest.fixture
def created(kube_admin: KubeClient) -> Iterator[list[str]]:
    """Names of servers a test created; deleted (finalizer released) afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            kube_admin.delete(f"{SERVERS}/{name}")
        except KubeError as exc:
            if exc.status != 404:
                raise
    for name in names:
        path = f"{SERVERS}/{name}"
        kube_admin.wait_for(lambda: not kube_admin.exists(path), 90, f"{name} deleted")  # noqa: B023 - used at once


def refused(client: KubeClient, body: dict[str, Any], dry_run: bool = False) -> KubeError:
    """Create ``body`` and expect the webhook to refuse it."""
    with pytest.raises(KubeError) as err:
        client.create(SERVERS, body, dry_run=dry_run)
    assert "denied the request" in err.value.message, err.value.message
    return err.value


POLICY_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("partition-not-allowed", {"slurm": {"partition": "debug"}}, "spec.slurm.partition"),
    ("too-many-gpus", {"slurm": {"gpus": 3}}, "spec.slurm.gpus"),
    ("gputype-without-gpus", {"slurm": {"gpuType": "a100"}}, "spec.slurm.gpuType"),
    ("too-many-cpus", {"slurm": {"cpusPerTask": 8}}, "spec.slurm.cpusPerTask"),
    ("too-many-nodes", {"slurm": {"nodes": 2}}, "spec.slurm.nodes"),
    ("time-above-max", {"slurm": {"timeLimit": "3:00:00"}}, "spec.slurm.timeLimit"),
    ("time-in-days", {"slurm": {"timeLimit": "1-00:00"}}, "spec.slurm.timeLimit"),
    ("app-not-offered", {"app": "rstudio"}, "spec.app"),
    ("env-not-allowed", {"environment": {"variables": [{"name": "LD_PRELOAD",
                                                         "value": "/tmp/x.so"}]}},
     "spec.environment.variables"),
    ("env-one-not-allowed", {"environment": {"variables": [
        {"name": "OMP_NUM_THREADS", "value": "2"}, {"name": "PATH", "value": "/tmp"}]}},
     "spec.environment.variables"),
    ("unknown-cluster", {"cluster": "mars"}, "spec.cluster"),
    ("login-without-nodes", {"target": "login"}, "spec.target"),
    ("unknown-login-node", {"cluster": LOGIN_CLUSTER, "target": "login",
                            "login": {"node": "login9"}}, "spec.login.node"),
    ("account-not-allowed", {"cluster": LOGIN_CLUSTER, "slurm": {"account": "proj-bio"}},
     "spec.slurm.account"),
    ("memory-above-max", {"cluster": LOGIN_CLUSTER,
                          "slurm": {"account": "proj-astro", "memory": "16G"}},
     "spec.slurm.memory"),
]


@pytest.mark.parametrize(("name", "over", "field"), POLICY_CASES,
                         ids=[p[0] for p in POLICY_CASES])
def test_policy_violation_refused(login_cluster: str, kube_admin: KubeClient,
                                  users: dict[str, KubeClient], name: str,
                                  over: dict[str, Any], field: str) -> None:
    err = refused(users["hub"], manifest(name, **over))
    assert err.status == 422, err.body
    assert f"{field}:" in err.message, err.message
    assert not kube_admin.exists(f"{SERVERS}/{name}")


def test_server_for_another_user_refused(users: dict[str, KubeClient]) -> None:
    err = refused(users["alice"], manifest("alice-for-bob", user="bob"))
    assert err.status == 403, err.body
    assert "spec.user:" in err.message and "'alice' may not create" in err.message


def test_other_service_account_refused(users: dict[str, KubeClient]) -> None:
    err = refused(users["builder"], manifest("builder-for-bob", user="bob"))
    assert err.status == 403, err.body
    assert "spec.user:" in err.message


def test_every_problem_reported_at_once(users: dict[str, KubeClient]) -> None:
    err = refused(users["alice"], manifest("many-problems", user="bob", app="rstudio",
                                           slurm={"gpus": 5}))
    for field in ("spec.user:", "spec.app:", "spec.slurm.gpus:"):
        assert field in err.message, err.message


@pytest.mark.parametrize("who", ["alice", "hub", "dave-admin"])
def test_allowed_creators(users: dict[str, KubeClient], created: list[str], who: str) -> None:
    user = "alice" if who == "alice" else "bob"
    name = f"by-{who}"
    obj = users[who].create(SERVERS, manifest(name, user=user, stop=True))
    created.append(name)
    assert obj["spec"]["user"] == user


def test_too_many_servers_of_a_user(login_cluster: str, kube_admin: KubeClient,
                                    created: list[str]) -> None:
    first = manifest("carol-first", user="carol", cluster=LOGIN_CLUSTER,
                     slurm={"account": "proj-astro"})
    kube_admin.create(SERVERS, first)
    created.append("carol-first")
    second = manifest("carol-second", user="carol", cluster=LOGIN_CLUSTER,
                      slurm={"account": "proj-astro"})

    def limit_applies() -> bool:  # once the operator's watch has seen the first one
        try:
            kube_admin.create(SERVERS, second, dry_run=True)
        except KubeError as exc:
            assert "spec.user: carol already has 1 servers" in exc.message, exc.message
            return True
        return False

    kube_admin.wait_for(limit_applies, 30, "the per-user server limit to apply")


# ----------------------------------------------------------------------------- updates


@pytest.fixture
def stopped_server(kube_admin: KubeClient, created: list[str]) -> str:
    kube_admin.create(SERVERS, manifest("upd-stopped", stop=True))
    created.append("upd-stopped")
    return f"{SERVERS}/upd-stopped"


def test_changing_user_refused(kube_admin: KubeClient, stopped_server: str) -> None:
    """Not even a cluster admin may move a server to another HPC user."""
    with pytest.raises(KubeError) as err:
        kube_admin.patch(stopped_server, {"spec": {"user": "bob"}})
    assert err.value.status == 422, err.value.body
    assert "spec.user: cannot change" in err.value.message, err.value.message
    assert kube_admin.get(stopped_server)["spec"]["user"] == "alice"


@pytest.mark.parametrize(("patch", "field"), [
    ({"cluster": LOGIN_CLUSTER}, "spec.cluster"),
    ({"target": "login"}, "spec.target"),
    ({"slurm": {"partition": "gpu"}}, "spec.slurm.partition"),
    ({"environment": {"modules": ["python/3.12"]}}, "spec.environment.modules"),
    ({"hub": {"tokenSecret": "someone-elses-token"}}, "spec.hub"),
], ids=["cluster", "target", "slurm", "environment", "hub"])
def test_changing_spec_refused(login_cluster: str, kube_admin: KubeClient,
                               stopped_server: str, patch: dict[str, Any],
                               field: str) -> None:
    with pytest.raises(KubeError) as err:
        kube_admin.patch(stopped_server, {"spec": patch})
    assert err.value.status == 422, err.value.body
    assert field in err.value.message and "cannot change" in err.value.message, err.value.message


def test_restarting_stopped_server_refused(kube_admin: KubeClient,
                                           stopped_server: str) -> None:
    with pytest.raises(KubeError) as err:
        kube_admin.patch(stopped_server, {"spec": {"stop": False}})
    assert err.value.status == 422, err.value.body
    assert "spec.stop: a stopped server cannot be restarted" in err.value.message
    assert kube_admin.get(stopped_server)["spec"]["stop"] is True


def test_metadata_changes_allowed(kube_admin: KubeClient, stopped_server: str) -> None:
    obj = kube_admin.patch(stopped_server, {"metadata": {"labels": {"team": "astro"}}})
    assert obj["metadata"]["labels"]["team"] == "astro"


def test_setting_stop_allowed(kube_admin: KubeClient, users: dict[str, KubeClient],
                              created: list[str]) -> None:
    users["alice"].create(SERVERS, manifest("upd-running"))
    created.append("upd-running")
    path = f"{SERVERS}/upd-running"
    obj = users["alice"].patch(path, {"spec": {"stop": True}})
    assert obj["spec"]["stop"] is True
    assert kube_admin.get(path)["spec"]["stop"] is True
