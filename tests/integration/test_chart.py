"""The Helm chart against real helm and a real API server.

helm comes from scripts/get-helm.sh (cached under ~/.cache/hpchub); when it cannot be had the
tests fail. Rendered manifests go to the session's kube-apiserver with server-side dry run,
then a real ``helm install``/``helm uninstall``; RBAC is checked by impersonating the chart's
ServiceAccounts. There is no kubelet: pods are never created, objects are.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpchub_api import constants as c
from hpchub_operator.rbac import OPERATOR_RULES
from hpchub_operator.settings import OperatorSettings
from hpchub_stack.kube import KubeAPIServer
from hpchub_stack.kubeclient import KubeClient, KubeError

from .fixtures_operator import ensure

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hpchub"
EXAMPLES = {p.stem.removeprefix("values-"): p for p in sorted((CHART / "examples").glob("*.yaml"))}
VALUES = {"defaults": None, **EXAMPLES}
RELEASE = "chartrel"
INSTALL_NS = "chart-install"
SERVERS_NS = "chart-servers"
OTHER_NS = "chart-other"
HUB_SA = f"system:serviceaccount:{INSTALL_NS}:{RELEASE}-hpchub-hub"
OPERATOR_SA = f"system:serviceaccount:{INSTALL_NS}:{RELEASE}-hpchub-operator"
# Optional operator settings the chart leaves at their defaults on purpose.
UNSET_SETTINGS = {"callback_url", "webhook_host", "webhook_cert_dir", "webhook_configuration"}


class Helm:
    """The helm binary with its own config/cache dirs, talking to the test API server."""

    def __init__(self, binary: str, home: Path, kubeconfig: Path | None) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.env = {**os.environ, "HELM_CONFIG_HOME": str(home / "config"),
                    "HELM_CACHE_HOME": str(home / "cache"), "HELM_DATA_HOME": str(home / "data")}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, *args]
        if self.kubeconfig is not None:
            cmd += ["--kubeconfig", str(self.kubeconfig)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=300,
                             check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n"
                                 f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res

    def template(self, values: Path | None, *extra: str, namespace: str = "hpchub"
                 ) -> list[dict[str, Any]]:
        args = ["template", RELEASE, str(CHART), "--namespace", namespace, *extra]
        if values is not None:
            args += ["--values", str(values)]
        return [d for d in yaml.safe_load_all(self.run(*args).stdout) if d]


@pytest.fixture(scope="session")
def helm_binary() -> str:
    """helm from scripts/get-helm.sh: a missing helm is a failure, not a skip."""
    res = subprocess.run(["bash", str(ROOT / "scripts" / "get-helm.sh")], capture_output=True,
                         text=True, check=False, timeout=600)
    assert res.returncode == 0, f"scripts/get-helm.sh failed:\n{res.stderr}"
    return res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def helm(helm_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm for offline commands (lint, template)."""
    return Helm(helm_binary, tmp_path_factory.mktemp("helm"), None)


@pytest.fixture(scope="session")
def helm_kube(helm_binary: str, kube: KubeAPIServer, kube_admin: KubeClient,
              tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm as the cluster admin of the session API server (CRDs already installed)."""
    return Helm(helm_binary, tmp_path_factory.mktemp("helm-kube"), kube.kubeconfig_path)


def _by_kind(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def _container_env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# ----------------------------------------------------------------------- offline checks


@pytest.mark.parametrize("name", list(VALUES))
def test_lint_strict(helm: Helm, name: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    if VALUES[name] is not None:
        args += ["--values", str(VALUES[name])]
    out = helm.run(*args).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("name", list(VALUES))
def test_template_renders_every_component(helm: Helm, name: str) -> None:
    docs = helm.template(VALUES[name])
    components = {d["metadata"].get("labels", {}).get("app.kubernetes.io/component")
                  for d in docs}
    assert {"operator", "hub", "traefik"} <= components
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, deployment["metadata"]["name"]
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"], container["name"]


@pytest.mark.parametrize("bad", [
    "hub.culer.enabled=false",                      # typo in a key
    "operator.webhook.enabeld=true",
    "traefik.service.type=Ingress",                 # not an allowed value
    "hpcClusters[0].name=x,hpcClusters[0].spec.slurm.restUrll=http://x",  # typo in a spec
])
def test_schema_refuses_typos(helm: Helm, bad: str) -> None:
    res = helm.run("template", RELEASE, str(CHART), "--set", bad, check=False)
    assert res.returncode != 0
    assert "schema" in res.stderr, res.stderr


def test_operator_cluster_role_is_operator_rules(helm: Helm) -> None:
    role = _by_kind(helm.template(None), "ClusterRole", "-operator")
    assert role["rules"] == OPERATOR_RULES


def test_hub_roles_are_hub_rules(helm: Helm) -> None:
    from hpchub_hub.rbac import HUB_CLUSTER_RULES, HUB_NAMESPACE_RULES

    docs = helm.template(None)
    assert _by_kind(docs, "Role", "-hub")["rules"] == HUB_NAMESPACE_RULES
    assert _by_kind(docs, "ClusterRole", "-hub")["rules"] == HUB_CLUSTER_RULES


def test_operator_env_is_the_settings(helm: Helm) -> None:
    """Every HPCHUB_* variable the chart sets is an operator setting and parses; every
    setting is set unless deliberately left at its default."""
    for values in VALUES.values():
        env = _container_env(_by_kind(helm.template(values), "Deployment", "-operator"))
        names = {k.removeprefix("HPCHUB_").lower() for k in env if k.startswith("HPCHUB_")}
        assert names <= set(OperatorSettings.model_fields), names - set(
            OperatorSettings.model_fields)
        assert set(OperatorSettings.model_fields) - names <= UNSET_SETTINGS
        OperatorSettings.from_env({k: v for k, v in env.items() if isinstance(v, str)})


def test_hub_env_is_the_hub_contract(helm: Helm) -> None:
    from hpchub_hub.config import VARIABLES

    known = set(VARIABLES) | {"HPCHUB_EXTRA_CONFIG", "HPCHUB_POSTGRES_PASSWORD"}
    for values in VALUES.values():
        env = _container_env(_by_kind(helm.template(values), "Deployment", "-hub"))
        hpchub = {k for k in env if k.startswith("HPCHUB_")}
        assert hpchub <= known, hpchub - known


def test_traefik_applies_routes_as_fast_as_the_tested_one(helm: Helm) -> None:
    """The chart's Traefik uses the provider throttle the tests and benchmarks run with
    (Traefik's own default, 2 s, would delay a new server's route by up to 2 s)."""
    from hpchub_stack.traefik import PROVIDERS_THROTTLE

    env = _container_env(_by_kind(helm.template(None), "Deployment", "-traefik"))
    assert env["TRAEFIK_PROVIDERS_PROVIDERSTHROTTLEDURATION"] == PROVIDERS_THROTTLE


# ------------------------------------------------------------- against the API server


def _discovery(admin: KubeClient) -> dict[tuple[str, str], tuple[str, bool]]:
    """(apiVersion, kind) -> (resource plural, namespaced), from the API server."""
    out: dict[tuple[str, str], tuple[str, bool]] = {}
    versions = ["v1"] + [v["groupVersion"] for g in admin.get("/apis")["groups"]
                         for v in g["versions"]]
    for gv in versions:
        base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        for r in admin.get(base)["resources"]:
            if "/" not in r["name"]:
                out[(gv, r["kind"])] = (r["name"], r["namespaced"])
    return out


def _path(doc: dict[str, Any], disco: dict[tuple[str, str], tuple[str, bool]],
          namespace: str) -> str:
    plural, namespaced = disco[(doc["apiVersion"], doc["kind"])]
    base = "/api/v1" if doc["apiVersion"] == "v1" else f"/apis/{doc['apiVersion']}"
    ns = doc["metadata"].get("namespace", namespace)
    return f"{base}/namespaces/{ns}/{plural}" if namespaced else f"{base}/{plural}"


@pytest.mark.parametrize("name", list(VALUES))
def test_server_side_dry_run(helm: Helm, kube_admin: KubeClient, name: str) -> None:
    """Every rendered object is accepted by the real API server (dryRun=All); only objects
    of APIs this server does not serve (cert-manager) are left out, and named."""
    namespace = "chart-dry"
    ensure(kube_admin, "/api/v1/namespaces", {"metadata": {"name": namespace}})
    version = kube_admin.get("/version")["gitVersion"]
    docs = helm.template(VALUES[name], "--kube-version", version, namespace=namespace)
    for ns in {d["metadata"].get("namespace") for d in docs} - {None}:
        ensure(kube_admin, "/api/v1/namespaces", {"metadata": {"name": ns}})
    disco = _discovery(kube_admin)
    unserved = [d for d in docs if (d["apiVersion"], d["kind"]) not in disco]
    assert {d["apiVersion"] for d in unserved} <= {"cert-manager.io/v1"}
    refused = []
    for doc in docs:
        if doc in unserved:
            continue
        try:
            kube_admin.create(_path(doc, disco, namespace), doc, dry_run=True)
        except KubeError as exc:
            refused.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not refused, "\n".join(refused)


@pytest.fixture(scope="module")
def installed(helm_kube: Helm, kube_admin: KubeClient) -> Iterator[list[dict[str, Any]]]:
    """`helm install` of the kind example (every component, an HPCCluster, the demo
    PostgreSQL) with a separate servers namespace; yields the installed manifest."""
    for ns in (INSTALL_NS, SERVERS_NS, OTHER_NS):
        ensure(kube_admin, "/api/v1/namespaces", {"metadata": {"name": ns}})
    helm_kube.run("install", RELEASE, str(CHART), "--namespace", INSTALL_NS,
                  "--values", str(EXAMPLES["kind"]),
                  "--set", f"hub.serversNamespace={SERVERS_NS}",
                  "--set", "operator.webhook.clusterIP=10.96.201.201")
    manifest = helm_kube.run("get", "manifest", RELEASE, "--namespace", INSTALL_NS).stdout
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    try:
        yield docs
    finally:
        helm_kube.run("uninstall", RELEASE, "--namespace", INSTALL_NS, "--wait=false",
                      check=False)


# ------------------------------------------------------------------------------ RBAC


def _can(admin: KubeClient, user: str, verb: str, resource: str, namespace: str = "",
         group: str = "", name: str = "") -> bool:
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{INSTALL_NS}",
              "system:authenticated"]
    review = admin.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": {
            "verb": verb, "resource": resource, "namespace": namespace, "group": group,
            "name": name}}})
    return bool(review["status"].get("allowed"))


def _as(admin: KubeClient, user: str) -> KubeClient:
    return admin.as_user(user, ("system:serviceaccounts",
                                f"system:serviceaccounts:{INSTALL_NS}",
                                "system:authenticated"))


def _status(call: Any) -> int:
    try:
        call()
    except KubeError as exc:
        return exc.status
    return 200


def test_hub_rights_are_exactly_the_spawners(installed: list[dict[str, Any]],
                                            kube_admin: KubeClient) -> None:
    g = c.GROUP
    allowed = [("create", c.SERVER_PLURAL, SERVERS_NS, g), ("get", c.SERVER_PLURAL, SERVERS_NS, g),
               ("list", c.SERVER_PLURAL, SERVERS_NS, g), ("watch", c.SERVER_PLURAL, SERVERS_NS, g),
               ("delete", c.SERVER_PLURAL, SERVERS_NS, g),
               ("create", "secrets", SERVERS_NS, ""), ("get", "secrets", SERVERS_NS, ""),
               ("patch", "secrets", SERVERS_NS, ""), ("delete", "secrets", SERVERS_NS, ""),
               ("get", c.CLUSTER_PLURAL, "", g), ("list", c.CLUSTER_PLURAL, "", g),
               ("watch", c.CLUSTER_PLURAL, "", g),
               ("list", "events", SERVERS_NS, ""), ("watch", "events", SERVERS_NS, "")]
    denied = [("list", "secrets", SERVERS_NS, ""), ("get", "secrets", INSTALL_NS, ""),
              ("get", "secrets", OTHER_NS, ""), ("create", c.SERVER_PLURAL, OTHER_NS, g),
              ("patch", c.SERVER_PLURAL, SERVERS_NS, g),
              ("patch", f"{c.SERVER_PLURAL}/status", SERVERS_NS, g),
              ("update", c.CLUSTER_PLURAL, "", g), ("patch", c.CLUSTER_PLURAL, "", g),
              ("delete", c.CLUSTER_PLURAL, "", g), ("create", c.CLUSTER_PLURAL, "", g),
              ("create", "pods", SERVERS_NS, ""), ("create", "events", SERVERS_NS, "")]
    assert [a for a in allowed if not _can(kube_admin, HUB_SA, *a)] == []
    assert [d for d in denied if _can(kube_admin, HUB_SA, *d)] == []

    # The same through real, impersonated requests.
    hub = _as(kube_admin, HUB_SA)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jsrv-token-x"},
              "stringData": {"token": "t"}}
    hub.create(f"/api/v1/namespaces/{SERVERS_NS}/secrets", secret)
    assert hub.get(f"/api/v1/namespaces/{SERVERS_NS}/secrets/jsrv-token-x")["data"]["token"]
    hub.delete(f"/api/v1/namespaces/{SERVERS_NS}/secrets/jsrv-token-x")
    assert hub.get(f"/apis/{c.API_VERSION}/{c.CLUSTER_PLURAL}")["kind"].endswith("List")
    webhook_cert = f"{RELEASE}-hpchub-operator-webhook-cert"
    assert _status(lambda: hub.get(f"/api/v1/namespaces/{INSTALL_NS}/secrets/{webhook_cert}")
                   ) == 403
    assert _status(lambda: hub.get(f"/api/v1/namespaces/{SERVERS_NS}/secrets")) == 403
    assert _status(lambda: hub.patch(f"/apis/{c.API_VERSION}/{c.CLUSTER_PLURAL}/mini",
                                     {"spec": {"displayName": "x"}})) == 403
    assert _status(lambda: hub.delete(f"/apis/{c.API_VERSION}/{c.CLUSTER_PLURAL}/mini")
                   ) == 403


def test_operator_cannot_create_pods(installed: list[dict[str, Any]],
                                     kube_admin: KubeClient) -> None:
    op = _as(kube_admin, OPERATOR_SA)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nope"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    for ns in (INSTALL_NS, SERVERS_NS, OTHER_NS):
        assert _status(lambda ns=ns: op.create(f"/api/v1/namespaces/{ns}/pods", pod,
                                               dry_run=True)) == 403
    assert not _can(kube_admin, OPERATOR_SA, "delete", "secrets", OTHER_NS)
    assert not _can(kube_admin, OPERATOR_SA, "list", "secrets", OTHER_NS)
    assert not _can(kube_admin, OPERATOR_SA, "create", c.SERVER_PLURAL, SERVERS_NS, c.GROUP)
    assert not _can(kube_admin, OPERATOR_SA, "delete", "validatingwebhookconfigurations",
                    "", "admissionregistration.k8s.io")
    # What it does need, it has.
    assert _can(kube_admin, OPERATOR_SA, "patch", f"{c.SERVER_PLURAL}/status", SERVERS_NS,
                c.GROUP)
    assert _can(kube_admin, OPERATOR_SA, "get", "secrets", OTHER_NS)


# -------------------------------------------------------------- uninstall (last)


def test_install_creates_every_object_and_uninstall_removes_them(
        installed: list[dict[str, Any]], helm_kube: Helm, kube_admin: KubeClient) -> None:
    disco = _discovery(kube_admin)
    paths = [f"{_path(d, disco, INSTALL_NS)}/{d['metadata']['name']}" for d in installed]
    kinds = {d["kind"] for d in installed}
    assert {"Deployment", "Service", "Secret", "ConfigMap", "ClusterRole", "Role",
            "NetworkPolicy", "PodDisruptionBudget", "ValidatingWebhookConfiguration",
            c.CLUSTER_KIND} <= kinds
    missing = [p for p in paths if not kube_admin.exists(p)]
    assert not missing, missing
    status = helm_kube.run("status", RELEASE, "--namespace", INSTALL_NS).stdout
    assert "STATUS: deployed" in status

    helm_kube.run("uninstall", RELEASE, "--namespace", INSTALL_NS)
    kube_admin.wait_for(lambda: not any(kube_admin.exists(p) for p in paths), 60,
                        "every installed object deleted")
    # CRDs stay (Helm never deletes crds/): JupyterServers of users must not vanish.
    assert kube_admin.exists(
        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{c.SERVER_PLURAL}.{c.GROUP}")
