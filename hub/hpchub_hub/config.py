"""The hub's configuration from HPCHUB_* environment variables, shared by the Helm chart, the
local stack and the demo (``hub/jupyterhub_config.py`` only calls :func:`configure`).

Every variable is listed in :data:`VARIABLES` with its default and meaning; docs/spawner.md
shows the same table. JupyterHub's own ``JUPYTERHUB_CRYPT_KEY`` (required: auth_state is
encrypted) is read by JupyterHub itself.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

VARIABLES: dict[str, tuple[str, str]] = {
    "HPCHUB_PUBLIC_URL": ("http://127.0.0.1:8000", "URL users open (Traefik's entrypoint)"),
    "HPCHUB_HUB_BIND_URL": ("http://127.0.0.1:8081", "where the hub itself listens"),
    "HPCHUB_HUB_CONNECT_URL": (
        "",
        "how Traefik and the nodes reach the hub (default: the bind URL)",
    ),
    "HPCHUB_DATA_DIR": (".", "cookie secret, pid file and default SQLite database"),
    "HPCHUB_DB_URL": (
        "",
        "SQLAlchemy URL (postgresql+psycopg2://...); default SQLite in the data dir",
    ),
    "HPCHUB_LOG_LEVEL": ("INFO", "hub log level"),
    "HPCHUB_REDIS_URL": ("redis://127.0.0.1:6379", "Redis of Traefik's Redis provider"),
    "HPCHUB_REDIS_PASSWORD": ("", "its password (or inside the URL)"),
    "HPCHUB_TRAEFIK_API_URL": ("http://127.0.0.1:8099", "Traefik's API (route checks)"),
    "HPCHUB_TRAEFIK_API_USERNAME": ("", "basic-auth user of the Traefik API"),
    "HPCHUB_TRAEFIK_API_PASSWORD": ("", "its password"),
    "HPCHUB_TRAEFIK_ENTRYPOINT": ("web", "Traefik entrypoint users come through"),
    "HPCHUB_TRAEFIK_SETUP_API_ROUTER": (
        "false",
        "let the hub add Traefik's API router (false: Traefik's static config serves it)",
    ),
    "HPCHUB_AUTHENTICATOR_CLASS": (
        "hpchub_hub.auth.HPCLDAPAuthenticator",
        "authenticator (import path or entry point name)",
    ),
    "HPCHUB_NAMESPACE": ("default", "namespace of the JupyterServers"),
    "HPCHUB_DEFAULT_CLUSTER": ("", "HPCCluster preselected in the form"),
    "HPCHUB_ALLOWED_CLUSTERS": ("", "comma-separated HPCClusters offered (empty: all)"),
    "HPCHUB_START_TIMEOUT": ("900", "seconds a spawn may take, queue wait included"),
    "HPCHUB_NAMED_SERVER_LIMIT": ("4", "named servers per user (0: no named servers)"),
    "HPCHUB_SHUTDOWN_ON_LOGOUT": ("true", "logging out stops the user's servers"),
    "HPCHUB_CULL_ENABLED": ("true", "run jupyterhub-idle-culler as a hub service"),
    "HPCHUB_CULL_TIMEOUT": ("3600", "seconds of inactivity before a server is culled"),
    "HPCHUB_CULL_EVERY": ("300", "seconds between culler passes"),
    "HPCHUB_CULL_MAX_AGE": ("0", "cull servers older than this many seconds (0: never)"),
    "HPCHUB_ADMIN_USERS": ("", "comma-separated hub admins besides the LDAP admin group"),
    "HPCHUB_LDAP_URLS": ("", "comma-separated LDAP server URLs"),
    "HPCHUB_LDAP_START_TLS": ("false", "StartTLS on ldap:// URLs"),
    "HPCHUB_LDAP_CA_FILE": ("", "CA bundle to verify the LDAP server"),
    "HPCHUB_LDAP_BIND_DN": ("", "service account for search-then-bind"),
    "HPCHUB_LDAP_BIND_PASSWORD": ("", "its password"),
    "HPCHUB_LDAP_USER_SEARCH_BASE": ("", "subtree holding the people"),
    "HPCHUB_LDAP_GROUP_SEARCH_BASE": ("", "subtree holding the groups (projects, admins)"),
    "HPCHUB_LDAP_ADMIN_GROUPS": ("", "comma-separated LDAP groups of hub admins"),
    "HPCHUB_LDAP_ALLOWED_GROUPS": ("", "comma-separated LDAP groups allowed to log in"),
    "HPCHUB_ALLOW_ALL": ("false", "let every directory user log in"),
    "HPCHUB_ALLOWED_NETWORKS": (
        "",
        "comma-separated CIDRs users may log in from "
        "(empty: the authenticator's default, anywhere)",
    ),
    "HPCHUB_TRUSTED_PROXIES": (
        "",
        "comma-separated CIDRs whose X-Forwarded-For is honoured (Traefik's address)",
    ),
}

_LDAP_STRINGS = {
    "HPCHUB_LDAP_CA_FILE": "tls_ca_file",
    "HPCHUB_LDAP_BIND_DN": "bind_dn",
    "HPCHUB_LDAP_BIND_PASSWORD": "bind_password",
    "HPCHUB_LDAP_USER_SEARCH_BASE": "user_search_base",
    "HPCHUB_LDAP_GROUP_SEARCH_BASE": "group_search_base",
}
_LDAP_LISTS = {
    "HPCHUB_LDAP_URLS": "server_urls",
    "HPCHUB_LDAP_ADMIN_GROUPS": "admin_groups",
    "HPCHUB_LDAP_ALLOWED_GROUPS": "allowed_groups",
    "HPCHUB_ALLOWED_NETWORKS": "allowed_networks",
    "HPCHUB_TRUSTED_PROXIES": "trusted_proxies",
}

CULLER_SERVICE = "idle-culler"
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


def _get(env: Mapping[str, str], name: str) -> str:
    return env.get(name) or VARIABLES[name][0]


def _bool(env: Mapping[str, str], name: str) -> bool:
    return _get(env, name).strip().lower() in ("1", "true", "yes", "on")


def _list(env: Mapping[str, str], name: str) -> list[str]:
    return [x.strip() for x in _get(env, name).split(",") if x.strip()]


def culler_command(env: Mapping[str, str]) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "jupyterhub_idle_culler",
        f"--timeout={int(_get(env, 'HPCHUB_CULL_TIMEOUT'))}",
        f"--cull-every={int(_get(env, 'HPCHUB_CULL_EVERY'))}",
    ]
    max_age = int(_get(env, "HPCHUB_CULL_MAX_AGE"))
    if max_age:
        cmd.append(f"--max-age={max_age}")
    return cmd


def configure(c: Any, env: Mapping[str, str]) -> None:
    """Fill the traitlets config ``c`` from ``env``."""
    data = Path(_get(env, "HPCHUB_DATA_DIR"))
    c.JupyterHub.bind_url = _get(env, "HPCHUB_PUBLIC_URL")
    c.JupyterHub.hub_bind_url = _get(env, "HPCHUB_HUB_BIND_URL")
    if env.get("HPCHUB_HUB_CONNECT_URL"):
        c.JupyterHub.hub_connect_url = env["HPCHUB_HUB_CONNECT_URL"]
    c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(data / "jupyterhub.pid")
    c.JupyterHub.db_url = env.get("HPCHUB_DB_URL") or f"sqlite:///{data / 'jupyterhub.sqlite'}"
    c.JupyterHub.log_level = _get(env, "HPCHUB_LOG_LEVEL")
    # Servers are Slurm jobs that outlive the hub: a hub restart must not stop them.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.shutdown_on_logout = _bool(env, "HPCHUB_SHUTDOWN_ON_LOGOUT")
    limit = int(_get(env, "HPCHUB_NAMED_SERVER_LIMIT"))
    c.JupyterHub.allow_named_servers = limit > 0
    c.JupyterHub.named_server_limit_per_user = limit

    # Proxy: Traefik runs as its own process (a hub restart keeps user traffic flowing).
    c.JupyterHub.proxy_class = "traefik_redis"
    c.TraefikRedisProxy.should_start = False
    c.TraefikRedisProxy.redis_url = _get(env, "HPCHUB_REDIS_URL")
    if env.get("HPCHUB_REDIS_PASSWORD"):
        c.TraefikRedisProxy.redis_password = env["HPCHUB_REDIS_PASSWORD"]
    c.TraefikRedisProxy.traefik_api_url = _get(env, "HPCHUB_TRAEFIK_API_URL")
    c.TraefikRedisProxy.traefik_api_username = _get(env, "HPCHUB_TRAEFIK_API_USERNAME")
    c.TraefikRedisProxy.traefik_api_password = _get(env, "HPCHUB_TRAEFIK_API_PASSWORD")
    c.TraefikRedisProxy.traefik_entrypoint = _get(env, "HPCHUB_TRAEFIK_ENTRYPOINT")
    c.TraefikRedisProxy.enable_setup_dynamic_config = _bool(env, "HPCHUB_TRAEFIK_SETUP_API_ROUTER")

    # Authentication: LDAP, with encrypted auth_state (projects, HOME/WORK/SCRATCH).
    c.JupyterHub.authenticator_class = _get(env, "HPCHUB_AUTHENTICATOR_CLASS")
    c.Authenticator.enable_auth_state = True
    c.Authenticator.admin_users = set(_list(env, "HPCHUB_ADMIN_USERS"))
    c.Authenticator.allow_all = _bool(env, "HPCHUB_ALLOW_ALL")
    ldap = c.HPCLDAPAuthenticator
    for var, trait in _LDAP_STRINGS.items():
        if env.get(var):
            setattr(ldap, trait, env[var])
    for var, trait in _LDAP_LISTS.items():
        if env.get(var):
            setattr(ldap, trait, _list(env, var))
    if env.get("HPCHUB_LDAP_START_TLS"):
        ldap.start_tls = _bool(env, "HPCHUB_LDAP_START_TLS")

    # Spawner: JupyterServer resources for the hpchub operator.
    c.JupyterHub.spawner_class = "hpchub"
    c.JupyterServerSpawner.namespace = _get(env, "HPCHUB_NAMESPACE")
    c.JupyterServerSpawner.default_cluster = _get(env, "HPCHUB_DEFAULT_CLUSTER")
    c.JupyterServerSpawner.allowed_clusters = _list(env, "HPCHUB_ALLOWED_CLUSTERS")
    c.JupyterServerSpawner.start_timeout = int(_get(env, "HPCHUB_START_TIMEOUT"))

    # Idle culling: a culled server's CR is deleted, so its job is cancelled.
    if _bool(env, "HPCHUB_CULL_ENABLED"):
        c.JupyterHub.services = [{"name": CULLER_SERVICE, "command": culler_command(env)}]
        c.JupyterHub.load_roles = [
            {"name": "idle-culler", "scopes": CULLER_SCOPES, "services": [CULLER_SERVICE]}
        ]
