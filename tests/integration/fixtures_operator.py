"""Session fixtures: the hpchub operator running as a real process, with least-privilege
RBAC through a ServiceAccount token, and an HPCCluster ``local`` for the stack's Slurm."""

from __future__ import annotations

import base64
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpchub_api import constants as c
from hpchub_operator.rbac import OPERATOR_RULES
from hpchub_stack.base import make_root, remove_root
from hpchub_stack.kube import KubeAPIServer
from hpchub_stack.kubeclient import KubeClient, KubeError
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.process import free_port
from hpchub_stack.slurm import SlurmCluster

from .registry import running

OPERATOR_NS = "hpchub"
CLUSTER = "local"
CLUSTERS = f"/apis/{c.API_VERSION}/{c.CLUSTER_PLURAL}"
WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
HUB_SERVICE_ACCOUNT = "system:serviceaccount:hpchub:hub"
ADMIN_GROUP = "hpchub:admins"


def ensure(client: KubeClient, path: str, body: dict[str, Any]) -> None:
    """Create an object; an existing one is fine."""
    try:
        client.create(path, body)
    except KubeError as exc:
        if exc.status != 409:
            raise


def service_account_token(admin: KubeClient, namespace: str, name: str) -> str:
    """A ServiceAccount with a bound token from the TokenRequest API (as in a pod)."""
    ensure(admin, f"/api/v1/namespaces/{namespace}/serviceaccounts",
           {"metadata": {"name": name}})
    tr = admin.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                      {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                       "spec": {"expirationSeconds": 86400}})
    return str(tr["status"]["token"])


def bind_cluster_role(admin: KubeClient, name: str, rules: list[dict[str, Any]],
                      subject: dict[str, str]) -> None:
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    ensure(admin, f"{rbac}/clusterroles", {"metadata": {"name": name}, "rules": rules})
    ensure(admin, f"{rbac}/clusterrolebindings", {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": name},
        "subjects": [subject]})


def webhooks_registered(admin: KubeClient) -> bool:
    """kopf created the ValidatingWebhookConfiguration and filled in its webhooks."""
    try:
        config = admin.get(f"{WEBHOOKS}/{c.GROUP}")
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return len(config.get("webhooks") or []) >= 2


def launcher_path() -> str:
    """hpchub-launch of this venv (made from /usr/bin/python3: executable by test users)."""
    path = Path(sys.executable).parent / "hpchub-launch"
    return str(path if path.exists() else shutil.which("hpchub-launch"))


def cluster_manifest(slurm: SlurmCluster, callback_url: str) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION, "kind": c.CLUSTER_KIND, "metadata": {"name": CLUSTER},
        "spec": {
            "displayName": "Local test cluster",
            "slurm": {"backend": "rest", "restUrl": slurm.rest_url,
                      "jwtKeySecret": {"name": "slurm-jwt", "namespace": OPERATOR_NS,
                                       "key": "jwt.key"},
                      "monitorUser": "slurm", "fastPollSeconds": 1, "slowPollSeconds": 3},
            "launcher": {"command": launcher_path(), "startTimeoutSeconds": 120},
            "policy": {"partitions": slurm.partition_names, "apps": ["jupyterlab"],
                       "environmentVariables": ["OMP_NUM_THREADS"], "maxGpus": 2,
                       "maxTimeLimit": "2:00:00", "maxServersPerUser": 30,
                       "maxCpusPerTask": 4},
            "defaults": {"partition": "compute", "timeLimit": "30"},
            "callbackUrl": callback_url,
        },
    }


@pytest.fixture(scope="session")
def operator_setup(kube: KubeAPIServer, kube_admin: KubeClient, slurm: SlurmCluster
                   ) -> Iterator[tuple[Path, Path]]:
    """Namespace, RBAC, JWT key Secret; yields (root, operator kubeconfig)."""
    ensure(kube_admin, "/api/v1/namespaces", {"metadata": {"name": OPERATOR_NS}})
    token = service_account_token(kube_admin, OPERATOR_NS, "hpchub-operator")
    bind_cluster_role(kube_admin, "hpchub-operator", OPERATOR_RULES, {
        "kind": "ServiceAccount", "name": "hpchub-operator", "namespace": OPERATOR_NS})
    ensure(kube_admin, f"/api/v1/namespaces/{OPERATOR_NS}/secrets", {
        "metadata": {"name": "slurm-jwt"}, "type": "Opaque",
        "data": {"jwt.key": base64.b64encode(slurm.jwt_key).decode()}})
    root = make_root("hpchub-operator-")
    kubeconfig = kube.write_kubeconfig(root / "kubeconfig", "operator", token)
    yield root, kubeconfig
    remove_root(root)


@pytest.fixture(scope="session")
def operator(operator_setup: tuple[Path, Path], kube_admin: KubeClient,
             slurm: SlurmCluster) -> Iterator[OperatorProcess]:
    """The operator process, with HPCCluster ``local`` applied and reachable."""
    root, kubeconfig = operator_setup
    proc = OperatorProcess(root, kubeconfig, operator_namespace=OPERATOR_NS,
                           unknown_grace_seconds="2", cluster_check_seconds="30",
                           webhook_port=str(free_port()), webhook_host="127.0.0.1",
                           hub_service_accounts=HUB_SERVICE_ACCOUNT, admin_group=ADMIN_GROUP)
    ensure(kube_admin, CLUSTERS, cluster_manifest(slurm, proc.callback_url))
    with running(proc):
        kube_admin.wait_for(
            lambda: bool((kube_admin.get(f"{CLUSTERS}/{CLUSTER}").get("status") or {})
                         .get("reachable")), 60, "HPCCluster local reachable")
        kube_admin.wait_for(lambda: webhooks_registered(kube_admin), 60,
                            "admission webhooks registered")
        yield proc
