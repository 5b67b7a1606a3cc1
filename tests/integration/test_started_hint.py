"""The job-started hint: the job script tells the operator its job began, and the operator
reads Slurm at once instead of at its next poll.

The cluster here polls once a minute at most, so within the test no poll can explain a
Starting status: without the hint a server goes Submitted -> Running (the port report), with
it Submitted -> Starting -> Running.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

import pytest

from hpchub_api import constants as c
from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.operator_proc import OperatorProcess

from .operator_helpers import (
    create_server,
    delete_server,
    describe,
    get_server,
    metric_value,
    reasons_through,
    wait_gone,
)

CLUSTERS = f"/apis/{c.API_VERSION}/{c.CLUSTER_PLURAL}"
SLOW = "slow-poll"


@pytest.fixture(scope="module")
def slow_poll_cluster(operator: OperatorProcess, kube_admin: KubeClient) -> Iterator[str]:
    """The stack's cluster, polled every 60 s (fast) and 600 s (slow)."""
    local = kube_admin.get(f"{CLUSTERS}/local")
    spec = copy.deepcopy(local["spec"])
    spec["slurm"].update({"fastPollSeconds": 60, "slowPollSeconds": 600})
    kube_admin.create(CLUSTERS, {"apiVersion": c.API_VERSION, "kind": c.CLUSTER_KIND,
                                 "metadata": {"name": SLOW}, "spec": spec})
    try:
        kube_admin.wait_for(
            lambda: (kube_admin.get(f"{CLUSTERS}/{SLOW}").get("status") or {}).get("reachable"),
            60, f"HPCCluster {SLOW} checked by the operator")
        yield SLOW
    finally:
        kube_admin.delete(f"{CLUSTERS}/{SLOW}")


def _phases_until_settled(kube: KubeClient, name: str) -> list[str]:
    """Every phase the server shows (read every 50 ms) until Running, Failed or Stopped."""
    phases: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        phase = (get_server(kube, name).get("status") or {}).get("phase", "")
        if not phases or phases[-1] != phase:
            phases.append(phase)
        if phase in ("Running", "Failed", "Stopped"):
            break
        time.sleep(0.05)
    return phases


def test_job_start_is_reported_without_waiting_for_a_poll(
        operator: OperatorProcess, kube_admin: KubeClient, slow_poll_cluster: str) -> None:
    # A first server makes the cluster's poller take its poll: whenever that happened, the
    # next one is at least a minute later, long after the second server has started.
    create_server(kube_admin, "hint-first", cluster=slow_poll_cluster)
    try:
        first = _phases_until_settled(kube_admin, "hint-first")
        assert first[-1] == "Running", (first, describe(kube_admin, "hint-first"))
        hints_before = metric_value(operator.metrics(), "hpchub_callback_reports_total",
                                    {"kind": "started"})
        create_server(kube_admin, "hinted", cluster=slow_poll_cluster)
        phases = _phases_until_settled(kube_admin, "hinted")
        assert phases[-1] == "Running", (phases, describe(kube_admin, "hinted"))
        reasons = reasons_through(kube_admin, "hinted", "Running")
        # Without the hint: Submitted -> Running (no poll saw the job before its report).
        assert reasons == ["Submitted", "Starting", "Running"], (reasons, phases)
        hints = metric_value(operator.metrics(), "hpchub_callback_reports_total",
                             {"kind": "started"})
        assert hints == hints_before + 1
    finally:
        for name in ("hinted", "hint-first"):
            delete_server(kube_admin, name)
        for name in ("hinted", "hint-first"):
            wait_gone(kube_admin, name, timeout=60)
