"""Helpers for operator tests: create JupyterServers, wait for phases, look at Slurm."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import Any

from hpchub_api import constants as c
from hpchub_stack.kubeclient import KubeClient, KubeError
from hpchub_stack.slurm import SlurmCluster

NS = "default"
SERVERS = f"/apis/{c.API_VERSION}/namespaces/{NS}/{c.SERVER_PLURAL}"


def poll_until(done: Callable[[], bool], limit: float, failure: Callable[[], str],
               interval: float = 0.3) -> None:
    """Call ``done`` every ``interval`` seconds until it is true; after ``limit`` seconds
    fail with ``failure()`` (computed then, so it shows the state at the deadline)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(interval)
    raise AssertionError(failure())


def server_manifest(name: str, user: str = "alice", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"user": user, "cluster": "local", "target": "slurm",
                            "slurm": {"partition": "compute", "timeLimit": "30"}}
    body.update(spec)
    return {"apiVersion": c.API_VERSION, "kind": c.SERVER_KIND, "metadata": {"name": name},
            "spec": body}


def create_server(kube: KubeClient, name: str, **spec: Any) -> dict[str, Any]:
    return kube.create(SERVERS, server_manifest(name, **spec))


def get_server(kube: KubeClient, name: str) -> dict[str, Any]:
    return kube.get(f"{SERVERS}/{name}")


def events(kube: KubeClient, name: str) -> list[dict[str, Any]]:
    items = kube.get(f"/api/v1/namespaces/{NS}/events",
                     fieldSelector=f"involvedObject.name={name}")["items"]
    # Timestamps have one-second resolution; etcd's revisions give the real order.
    return sorted(items, key=lambda e: int(e["metadata"]["resourceVersion"]))


def reasons_through(kube: KubeClient, name: str, last: str, timeout: float = 15) -> list[str]:
    """The server's event reasons in order, once one with reason `last` is there.

    The operator posts a phase's Event after it writes the phase, so a test that has just
    seen the phase waits for the Event rather than reading the list at once. On timeout the
    list as it stands is returned, for the caller's assertion to show.
    """
    deadline = time.monotonic() + timeout
    while True:
        reasons = [e["reason"] for e in events(kube, name)]
        if last in reasons or time.monotonic() > deadline:
            return reasons
        time.sleep(0.1)


def describe(kube: KubeClient, name: str) -> str:
    """What a human would look at: status and events."""
    try:
        obj = get_server(kube, name)
    except KubeError as exc:
        return f"{name}: {exc}"
    evs = "\n".join(f"  {e['type']} {e['reason']}: {e['message']}" for e in events(kube, name))
    return f"{name} status={obj.get('status')}\nevents:\n{evs}"


def wait_phase(kube: KubeClient, name: str, phases: set[str], timeout: float = 120
               ) -> dict[str, Any]:
    """Poll until the server's phase is one of ``phases``; fail with status and events."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = get_server(kube, name)
        if (obj.get("status") or {}).get("phase") in phases:
            return obj
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    raise AssertionError(f"{name} never reached {phases}:\n{describe(kube, name)}")


def wait_gone(kube: KubeClient, name: str, timeout: float = 60) -> None:
    poll_until(lambda: not kube.exists(f"{SERVERS}/{name}"), timeout,
               lambda: f"{name} still exists (finalizer?):\n{describe(kube, name)}")


def delete_server(kube: KubeClient, name: str) -> None:
    try:
        kube.delete(f"{SERVERS}/{name}")
    except KubeError as exc:
        if exc.status != 404:
            raise


def slurm_jobs(slurm: SlurmCluster, uid: str) -> list[dict[str, Any]]:
    """Jobs whose comment carries this CR uid, straight from slurmrestd."""
    status, body = slurm.rest_request("GET", "jobs", "slurm")
    assert status == 200, body
    return [j for j in body.get("jobs", []) if j.get("comment") == c.job_comment(uid)]


def job_state(job: dict[str, Any]) -> str:
    state = job.get("job_state")
    return str(state[0] if isinstance(state, list) else state)


def http_status(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def metric_value(text: str, name: str, labels: dict[str, str]) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text = line[len(name) + 1:line.index("}")]
        got = ",".join(sorted(label_text.split(",")))
        if got == want:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
