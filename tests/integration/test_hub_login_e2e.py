"""End to end through Traefik for a login-node server: LDAP login form, the spawn form's
login-node target, progress, JupyterLab served from the login node (the stack's sshd), stop;
the JupyterServer is gone and no process of the server is left on the node."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hpchub_stack.hub import JupyterHubProcess
from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.slurm import SlurmCluster
from hpchub_stack.sshd import SSHServer

from .hub_helpers import HubUser, cr_name, server_object, wait_gone
from .login_helpers import (
    LOGIN_NODE,
    login_clusters_applied,
    login_pid,
    processes_of,
    wait_no_processes,
)
from .operator_helpers import poll_until
from .test_hub_e2e import logged_in

CLUSTER = "login-hub"
SERVER = "on-login"
LOGIN_FORM = {
    "target": "login",
    "cluster": CLUSTER,
    "login_node": LOGIN_NODE,
    "account": "proj-astro",
}


@pytest.fixture(scope="module")
def login_cluster(
    operator: OperatorProcess, kube_admin: KubeClient, slurm: SlurmCluster, sshd: SSHServer
) -> Iterator[Path]:
    """An HPCCluster whose login node is the stack's sshd; yields the node's state dir."""
    with login_clusters_applied(kube_admin, operator, slurm, sshd, [CLUSTER]) as state_dir:
        yield state_dir


def spawn_watching_progress(
    session: HubUser, fields: dict[str, str], server: str
) -> list[dict[str, Any]]:
    """Submit the spawn form and, as the spawn page does, follow the progress stream from
    the moment the hub lists the server as pending (the POST may only answer once ready)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        posted = pool.submit(session.submit_spawn, fields, server)
        poll_until(
            lambda: posted.done() or session.server_model(server) is not None,
            60,
            lambda: f"{server!r} never listed as pending",
            interval=0.2,
        )
        events = list(session.progress(server))
        resp = posted.result()
    assert resp.status_code == 302, (resp.status_code, resp.text[-2000:])
    return events


def test_login_node_server_through_traefik_and_stop(
    hub: JupyterHubProcess, login_cluster: Path, kube_admin: KubeClient
) -> None:
    alice = logged_in(hub, "alice")
    form = alice.spawn_form(SERVER)
    assert form.status_code == 200
    assert f'value="{CLUSTER}"' in form.text
    assert f'value="{LOGIN_NODE}" data-cluster="{CLUSTER}"' in form.text
    assert 'value="login"' in form.text
    name = cr_name("alice", SERVER)
    try:
        events = spawn_watching_progress(alice, LOGIN_FORM, SERVER)
        assert events[-1].get("ready"), events
        percents = [e["progress"] for e in events]
        assert percents == sorted(percents) and len(set(percents)) > 2, events
        assert any(f"on {LOGIN_NODE}" in e.get("message", "") for e in events[:-1]), events

        obj = server_object(kube_admin, "alice", SERVER)
        assert obj is not None
        assert obj["spec"]["target"] == "login" and obj["spec"]["cluster"] == CLUSTER
        st = obj["status"]
        assert st["phase"] == "Running" and st["node"] == LOGIN_NODE, st
        assert st["jobId"].startswith(f"login:{LOGIN_NODE}:"), st
        uid, pid = obj["metadata"]["uid"], login_pid(st)
        assert processes_of(pid, uid), "the server's processes are not visible on the node"

        lab_path = f"/user/alice/{SERVER}/lab"
        lab = alice.http.get(hub.public_url + lab_path, timeout=60)
        assert lab.status_code == 200 and lab.url.startswith(hub.public_url + lab_path), (
            lab.status_code,
            lab.url,
        )
        assert "JupyterLab" in lab.text

        resp = alice.api("DELETE", f"/users/alice/servers/{SERVER}")
        assert resp.status_code in (202, 204), resp.text
        alice.wait_stopped(SERVER)
        wait_gone(kube_admin, name)
        wait_no_processes(pid, uid)
    finally:
        if server_object(kube_admin, "alice", SERVER) is not None:
            alice.api("DELETE", f"/users/alice/servers/{SERVER}")
            wait_gone(kube_admin, name)
