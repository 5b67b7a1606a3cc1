"""Prepare a Kubernetes API server for hpchub: namespace, CRDs, the operator's identity and
least-privilege RBAC, the Slurm JWT key Secret, and the HPCCluster of the local Slurm.

Shared by the test fixtures, the benchmarks and ``hpchub demo``.
"""

from __future__ import annotations

import base64
import shutil
import sys
from pathlib import Path
from typing import Any

from hpchub_api import constants as c
from hpchub_api.crds import all_crds
from hpchub_operator.rbac import OPERATOR_RULES

from .kube import KubeAPIServer
from .kubeclient import KubeClient, KubeError
from .operator_proc import OperatorProcess
from .process import free_port
from .slurm import SlurmCluster

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


def admin_client(kube: KubeAPIServer) -> KubeClient:
    """A cluster-admin client with the CRDs installed."""
    client = KubeClient(kube.url, kube.admin_token, kube.ca_path)
    for crd in all_crds().values():
        client.apply_crd(crd)
    return client


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
    """A ClusterRole with ``rules`` bound to ``subject``."""
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
    """The HPCCluster ``local`` for the stack's Slurm."""
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


def prepare_operator(kube: KubeAPIServer, admin: KubeClient, slurm: SlurmCluster,
                     root: Path) -> Path:
    """Namespace, ServiceAccount + RBAC, JWT key Secret; return the operator's kubeconfig."""
    ensure(admin, "/api/v1/namespaces", {"metadata": {"name": OPERATOR_NS}})
    token = service_account_token(admin, OPERATOR_NS, "hpchub-operator")
    bind_cluster_role(admin, "hpchub-operator", OPERATOR_RULES, {
        "kind": "ServiceAccount", "name": "hpchub-operator", "namespace": OPERATOR_NS})
    ensure(admin, f"/api/v1/namespaces/{OPERATOR_NS}/secrets", {
        "metadata": {"name": "slurm-jwt"}, "type": "Opaque",
        "data": {"jwt.key": base64.b64encode(slurm.jwt_key).decode()}})
    return kube.write_kubeconfig(root / "kubeconfig", "operator", token)


def operator_process(root: Path, kubeconfig: Path, **settings: str) -> OperatorProcess:
    """The operator as the stack runs it: our namespace, a local admission webhook, the
    hub's service account and the admin group allowed to act for users; ``settings`` add
    or override HPCHUB_* settings."""
    defaults = {"operator_namespace": OPERATOR_NS, "webhook_port": str(free_port()),
                "webhook_host": "127.0.0.1", "hub_service_accounts": HUB_SERVICE_ACCOUNT,
                "admin_group": ADMIN_GROUP}
    return OperatorProcess(root, kubeconfig, **(defaults | settings))


def wait_operator_ready(admin: KubeClient, timeout: float = 60) -> None:
    """HPCCluster ``local`` reachable and the admission webhooks registered."""
    admin.wait_for(lambda: bool((admin.get(f"{CLUSTERS}/{CLUSTER}").get("status") or {})
                                .get("reachable")), timeout, "HPCCluster local reachable")
    admin.wait_for(lambda: webhooks_registered(admin), timeout,
                   "admission webhooks registered")
