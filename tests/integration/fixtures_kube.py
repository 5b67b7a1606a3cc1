"""Session fixtures: a real kube-apiserver with our CRDs installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hpchub_stack.base import make_root, remove_root
from hpchub_stack.bootstrap import admin_client
from hpchub_stack.kube import KubeAPIServer
from hpchub_stack.kubeclient import KubeClient

from .registry import running


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeAPIServer]:
    """A started etcd + kube-apiserver (RBAC, token auth)."""
    root = make_root("hpchub-kube-")
    with running(KubeAPIServer(root)) as server:
        yield server
    remove_root(root)


@pytest.fixture(scope="session")
def kube_admin(kube: KubeAPIServer) -> KubeClient:
    """A client with cluster-admin rights, CRDs installed."""
    return admin_client(kube)
