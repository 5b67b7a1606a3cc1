"""Session fixtures: the hpchub operator running as a real process, with least-privilege
RBAC through a ServiceAccount token, and an HPCCluster ``local`` for the stack's Slurm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hpchub_stack.base import make_root, remove_root
from hpchub_stack.bootstrap import (  # noqa: F401 - re-exported for test modules
    ADMIN_GROUP,
    CLUSTER,
    CLUSTERS,
    HUB_SERVICE_ACCOUNT,
    OPERATOR_NS,
    WEBHOOKS,
    bind_cluster_role,
    cluster_manifest,
    ensure,
    launcher_path,
    operator_process,
    prepare_operator,
    service_account_token,
    wait_operator_ready,
    webhooks_registered,
)
from hpchub_stack.kube import KubeAPIServer
from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.slurm import SlurmCluster

from .registry import running


@pytest.fixture(scope="session")
def operator_setup(kube: KubeAPIServer, kube_admin: KubeClient, slurm: SlurmCluster
                   ) -> Iterator[tuple[Path, Path]]:
    """Namespace, RBAC, JWT key Secret; yields (root, operator kubeconfig)."""
    root = make_root("hpchub-operator-")
    yield root, prepare_operator(kube, kube_admin, slurm, root)
    remove_root(root)


@pytest.fixture(scope="session")
def operator(operator_setup: tuple[Path, Path], kube_admin: KubeClient,
             slurm: SlurmCluster) -> Iterator[OperatorProcess]:
    """The operator process, with HPCCluster ``local`` applied and reachable."""
    root, kubeconfig = operator_setup
    proc = operator_process(root, kubeconfig, unknown_grace_seconds="2",
                            cluster_check_seconds="30")
    ensure(kube_admin, CLUSTERS, cluster_manifest(slurm, proc.callback_url))
    with running(proc):
        wait_operator_ready(kube_admin)
        yield proc
