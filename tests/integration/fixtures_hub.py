"""Session fixture: the real hub (project config) behind the stack's Traefik, with the LDAP
authenticator, PostgreSQL, Redis routes and the JupyterServer spawner talking to the operator
through a ServiceAccount with exactly the hub's RBAC."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hpchub_stack.base import make_root, remove_root
from hpchub_stack.hub import JupyterHubProcess
from hpchub_stack.hub_setup import (  # noqa: F401 - re-exported for test modules
    HUB_NS,
    HUB_SA,
    hub_rbac,
    hub_settings,
    prepare_hub,
)
from hpchub_stack.kube import KubeAPIServer
from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.ldap import LdapDirectory
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.postgres import Postgres
from hpchub_stack.redis import Redis
from hpchub_stack.traefik import Traefik

from .registry import running

CULL_TIMEOUT = 90
"""Seconds of inactivity before the culler stops a server (short for the tests)."""
CULL_EVERY = 10


@pytest.fixture(scope="session")
def hub(
    operator: OperatorProcess,
    kube: KubeAPIServer,
    kube_admin: KubeClient,
    ldap: LdapDirectory,
    postgres: Postgres,
    redis: Redis,
    traefik: Traefik,
) -> Iterator[JupyterHubProcess]:
    """The hub, ready directly and through Traefik (``hub.public_url``)."""
    root = make_root("hpchub-hub-")
    kubeconfig = prepare_hub(kube, kube_admin, root)
    settings = hub_settings(kubeconfig, ldap, postgres, redis, traefik,
                            cull_timeout=CULL_TIMEOUT, cull_every=CULL_EVERY, log_level="DEBUG")
    proc = JupyterHubProcess(root, settings, public_url=traefik.url)
    with running(proc):
        yield proc
    remove_root(root)
