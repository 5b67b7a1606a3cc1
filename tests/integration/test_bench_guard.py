"""Regression guard for benchmark scenario 1: the operator's Slurm queries do not grow with
the number of servers (one batched ``/jobs`` listing per cluster per poll).

Counts, not times: over the same number of slow-poll intervals, slurmrestd must see the same
number of ``/jobs`` requests with 2 and with 6 running servers (within 1), and no more than
one per interval.
"""

from __future__ import annotations

import time

from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.slurm import SlurmCluster

from .fixtures_operator import CLUSTER, CLUSTERS
from .operator_helpers import create_server, delete_server, wait_gone, wait_phase

INTERVALS = 4


def _slow_poll_seconds(kube_admin: KubeClient) -> float:
    spec = kube_admin.get(f"{CLUSTERS}/{CLUSTER}")["spec"]
    return float(spec["slurm"].get("slowPollSeconds", 15))


def _wait_for_request(slurm: SlurmCluster, timeout: float = 60) -> int:
    """Block until slurmrestd logs one more /jobs request; return the new count."""
    first = slurm.rest_request_count("/jobs")
    deadline = time.monotonic() + timeout
    while (now := slurm.rest_request_count("/jobs")) == first:
        assert time.monotonic() < deadline, "the operator stopped polling Slurm"
        time.sleep(0.05)
    return now


def _jobs_requests_per_window(kube_admin: KubeClient, slurm: SlurmCluster) -> int:
    """/jobs requests in INTERVALS slow-poll intervals, counted from just after a poll (so
    the count is INTERVALS or INTERVALS - 1 whatever the jitter, when the operator makes one
    listing per poll). Start-up listings are over: every server is Running already."""
    window = INTERVALS * _slow_poll_seconds(kube_admin)
    _wait_for_request(slurm)
    time.sleep(1.0)  # a poll's listing is logged once; skip past it
    before = slurm.rest_request_count("/jobs")
    time.sleep(window)
    return slurm.rest_request_count("/jobs") - before


def test_slurm_queries_do_not_grow_with_servers(operator: OperatorProcess,
                                                kube_admin: KubeClient,
                                                slurm: SlurmCluster) -> None:
    names = [f"guard-{i}" for i in range(6)]
    try:
        for name in names[:2]:
            create_server(kube_admin, name)
        for name in names[:2]:
            assert wait_phase(kube_admin, name, {"Running", "Failed"},
                              timeout=180)["status"]["phase"] == "Running"
        with_two = _jobs_requests_per_window(kube_admin, slurm)
        for name in names[2:]:
            create_server(kube_admin, name)
        for name in names[2:]:
            assert wait_phase(kube_admin, name, {"Running", "Failed"},
                              timeout=240)["status"]["phase"] == "Running"
        with_six = _jobs_requests_per_window(kube_admin, slurm)
    finally:
        for name in names:
            delete_server(kube_admin, name)
        for name in names:
            wait_gone(kube_admin, name, timeout=120)
    assert abs(with_six - with_two) <= 1, (with_two, with_six)
    assert with_six <= INTERVALS + 1, (with_two, with_six)  # one listing per interval
