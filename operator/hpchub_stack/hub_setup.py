"""Prepare the API server for the hub (ServiceAccount, exactly the hub's RBAC) and compute
the HPCHUB_* settings of the project's hub configuration for this stack. Used by the test
fixtures, ``hpchub demo`` and the benchmarks."""

from __future__ import annotations

from pathlib import Path

from hpchub_hub.rbac import HUB_CLUSTER_RULES, HUB_NAMESPACE_RULES

from .bootstrap import CLUSTER, OPERATOR_NS, bind_cluster_role, ensure, service_account_token
from .kube import KubeAPIServer
from .kubeclient import KubeClient
from .ldap import ADMIN_GROUP, LdapDirectory
from .postgres import Postgres
from .redis import Redis
from .traefik import Traefik
from .users import GROUP

HUB_NS = OPERATOR_NS
"""The hub's namespace: its ServiceAccount (system:serviceaccount:hpchub:hub, which the
operator's webhook lets act for any HPC user) and the JupyterServers it creates."""
HUB_SA = "hub"


def hub_rbac(admin: KubeClient) -> None:
    """Role + RoleBinding in the hub namespace, ClusterRole + binding for HPCClusters."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    subject = {"kind": "ServiceAccount", "name": HUB_SA, "namespace": HUB_NS}
    ensure(
        admin,
        f"{rbac}/namespaces/{HUB_NS}/roles",
        {"metadata": {"name": "hpchub-hub"}, "rules": HUB_NAMESPACE_RULES},
    )
    ensure(
        admin,
        f"{rbac}/namespaces/{HUB_NS}/rolebindings",
        {
            "metadata": {"name": "hpchub-hub"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "hpchub-hub",
            },
            "subjects": [subject],
        },
    )
    bind_cluster_role(admin, "hpchub-hub", HUB_CLUSTER_RULES, subject)


def hub_settings(
    kubeconfig: Path,
    ldap: LdapDirectory,
    postgres: Postgres,
    redis: Redis,
    traefik: Traefik,
    *,
    cull_timeout: int = 3600,
    cull_every: int = 300,
    log_level: str = "INFO",
) -> dict[str, str]:
    """Every HPCHUB_* variable the project config reads, for this stack."""
    settings = {
        "KUBECONFIG": str(kubeconfig),
        "HPCHUB_DB_URL": postgres.url,
        "HPCHUB_REDIS_URL": f"redis://{redis.endpoint}",
        "HPCHUB_TRAEFIK_API_URL": traefik.api_url,
        "HPCHUB_TRAEFIK_ENTRYPOINT": "web",
        "HPCHUB_NAMESPACE": HUB_NS,
        "HPCHUB_DEFAULT_CLUSTER": CLUSTER,
        "HPCHUB_START_TIMEOUT": "180",
        "HPCHUB_CULL_TIMEOUT": str(cull_timeout),
        "HPCHUB_CULL_EVERY": str(cull_every),
        "HPCHUB_SHUTDOWN_ON_LOGOUT": "true",
        "HPCHUB_LDAP_URLS": ldap.url,
        "HPCHUB_LDAP_BIND_DN": ldap.reader_dn,
        "HPCHUB_LDAP_BIND_PASSWORD": ldap.reader_password,
        "HPCHUB_LDAP_USER_SEARCH_BASE": ldap.people_dn,
        "HPCHUB_LDAP_GROUP_SEARCH_BASE": ldap.groups_dn,
        "HPCHUB_LDAP_ADMIN_GROUPS": ADMIN_GROUP,
        "HPCHUB_LDAP_ALLOWED_GROUPS": GROUP,
        "HPCHUB_TRUSTED_PROXIES": "127.0.0.1/32",
        "HPCHUB_LOG_LEVEL": log_level,
    }
    if redis.password:
        settings["HPCHUB_REDIS_PASSWORD"] = redis.password
    return settings


def prepare_hub(kube: KubeAPIServer, admin: KubeClient, root: Path) -> Path:
    """The hub's ServiceAccount and RBAC; return a kubeconfig with its token."""
    token = service_account_token(admin, HUB_NS, HUB_SA)
    hub_rbac(admin)
    return kube.write_kubeconfig(root / "kubeconfig-hub", "hub", token)


