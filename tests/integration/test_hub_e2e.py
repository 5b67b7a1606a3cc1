"""End to end through Traefik: LDAP login form, spawn form, progress, JupyterLab served from
a Slurm job, stop; isolation between users; hub and Traefik restarts; idle culling."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from hpchub_stack.hub import JupyterHubProcess
from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.slurm import SlurmCluster
from hpchub_stack.traefik import Traefik
from hpchub_stack.users import user

from .fixtures_hub import CULL_EVERY, CULL_TIMEOUT
from .hub_helpers import HubUser, cr_name, live_jobs, server_object, wait_gone, wait_no_live_job

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
COMPUTE = {
    "target": "slurm",
    "cluster": "local",
    "partition": "compute",
    "account": "proj-astro",
    "time_limit": "30",
    "gpus": "0",
}


def logged_in(hub: JupyterHubProcess, login: str) -> HubUser:
    session = HubUser(hub.public_url, login)
    resp = session.log_in(user(login).password)
    assert resp.status_code == 200 and "/hub/login" not in resp.url, (resp.status_code, resp.url)
    return session


def spawn(session: HubUser, server: str = "", **fields: str) -> list[dict[str, Any]]:
    """Submit the spawn form; return the progress events (the last one is ready)."""
    resp = session.submit_spawn({**COMPUTE, **fields}, server)
    assert resp.status_code == 302, (resp.status_code, resp.text[-2000:])
    events = list(session.progress(server))
    assert events[-1].get("ready"), events
    return events


@pytest.fixture(scope="module")
def alice(hub: JupyterHubProcess) -> HubUser:
    return logged_in(hub, "alice")


def test_login_spawn_lab_through_traefik_and_stop(
    hub: JupyterHubProcess, alice: HubUser, kube_admin: KubeClient, slurm: SlurmCluster
) -> None:
    form = alice.spawn_form()
    assert form.status_code == 200
    # Only alice's projects are offered; bob's is not.
    assert 'value="proj-astro"' in form.text and 'value="proj-gpu"' in form.text
    assert "proj-bio" not in form.text
    events = spawn(alice)
    messages = [e.get("message", "") for e in events]
    assert any("Slurm job" in m or "Queued" in m for m in messages), messages
    obj = server_object(kube_admin, "alice")
    assert obj is not None and obj["status"]["phase"] == "Running"
    assert obj["spec"]["slurm"]["account"] == "proj-astro"
    uid = obj["metadata"]["uid"]
    assert live_jobs(slurm, uid)
    lab = alice.http.get(f"{hub.public_url}/user/alice/lab", timeout=60)
    assert lab.status_code == 200 and lab.url.startswith(f"{hub.public_url}/user/alice/lab")
    assert "JupyterLab" in lab.text
    resp = alice.api("DELETE", "/users/alice/server")
    assert resp.status_code in (202, 204), resp.text
    alice.wait_stopped()
    wait_gone(kube_admin, cr_name("alice"))
    wait_no_live_job(slurm, uid)


def test_named_server(
    hub: JupyterHubProcess, alice: HubUser, kube_admin: KubeClient, slurm: SlurmCluster
) -> None:
    events = spawn(alice, "gpu-work", account="proj-gpu")
    assert events[-1]["ready"]
    obj = server_object(kube_admin, "alice", "gpu-work")
    assert obj is not None and obj["spec"]["serverName"] == "gpu-work"
    assert obj["spec"]["slurm"]["account"] == "proj-gpu"
    prefix = {e["name"]: e["value"] for e in obj["spec"]["hub"]["environment"]}
    assert prefix["JUPYTERHUB_SERVICE_PREFIX"] == "/user/alice/gpu-work/"
    lab = alice.http.get(f"{hub.public_url}/user/alice/gpu-work/lab", timeout=60)
    assert lab.status_code == 200 and "/user/alice/gpu-work/lab" in lab.url
    assert alice.api("DELETE", "/users/alice/servers/gpu-work").status_code in (202, 204)
    alice.wait_stopped("gpu-work")
    wait_gone(kube_admin, cr_name("alice", "gpu-work"))
    wait_no_live_job(slurm, obj["metadata"]["uid"])


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("account", "proj-bio", "not one of your active projects"),
        ("partition", "debug", "not allowed"),
        ("gpus", "5", "exceeds the limit of 2"),
        ("conda_env", "base; rm -rf ~", "is not allowed"),
        ("modules", "python/3.11 $(id)", "is not allowed"),
        ("time_limit", "9:00:00", "exceeds the limit"),
    ],
)
def test_crafted_spawn_post_is_refused_with_reason(
    alice: HubUser, kube_admin: KubeClient, field: str, value: str, reason: str
) -> None:
    resp = alice.submit_spawn({**COMPUTE, field: value})
    assert resp.status_code == 400, resp.status_code
    assert reason in resp.text, resp.text[-3000:]
    assert server_object(kube_admin, "alice") is None


def test_api_spawn_with_foreign_project_is_refused(alice: HubUser, kube_admin: KubeClient) -> None:
    # The REST API skips the form: start() validates user_options again.
    resp = alice.api("POST", "/users/alice/server", json={**COMPUTE, "account": "proj-bio"})
    assert resp.status_code == 400, resp.text
    assert "not one of your active projects" in resp.text, resp.text
    assert server_object(kube_admin, "alice") is None


def test_user_cannot_spawn_for_another(alice: HubUser, kube_admin: KubeClient) -> None:
    assert alice.submit_spawn(COMPUTE, for_user="bob").status_code in (403, 404)
    assert alice.api("POST", "/users/bob/server", json=COMPUTE).status_code in (403, 404)
    assert server_object(kube_admin, "bob") is None


def test_user_cannot_reach_another_users_server(
    hub: JupyterHubProcess, alice: HubUser, kube_admin: KubeClient, slurm: SlurmCluster
) -> None:
    bob = logged_in(hub, "bob")
    spawn(bob, account="proj-bio")
    try:
        assert bob.http.get(f"{hub.public_url}/user/bob/lab", timeout=60).status_code == 200
        # HTTP: alice is sent through OAuth and refused by the hub.
        resp = alice.http.get(f"{hub.public_url}/user/bob/lab", timeout=60)
        assert resp.status_code == 403, (resp.status_code, resp.url)
        resp = alice.http.get(
            f"{hub.public_url}/user/bob/api/contents", timeout=60, allow_redirects=False
        )
        assert resp.status_code in (302, 403), resp.status_code
        # Even with bob's server cookie name but alice's own cookies, the API is closed.
        assert ws_status(hub, alice, "/user/bob/api/events/subscribe") in (302, 403)
        assert ws_status(hub, bob, "/user/bob/api/events/subscribe") == 101
    finally:
        bob.api("DELETE", "/users/bob/server")
        bob.wait_stopped()
        wait_gone(kube_admin, cr_name("bob"))


def ws_status(hub: JupyterHubProcess, session: HubUser, path: str) -> int:
    """The HTTP status of a websocket handshake through Traefik with the session's cookies."""
    url = hub.public_url.replace("http://", "ws://") + path
    cookies = "; ".join(
        f"{c.name}={c.value}" for c in session.http.cookies if path.startswith(c.path or "/")
    )
    try:
        ws = websocket.create_connection(url, cookie=cookies, timeout=20, origin=hub.public_url)
    except websocket.WebSocketBadStatusException as exc:
        return int(exc.status_code)
    ws.close()
    return 101


def lab_ok(hub: JupyterHubProcess, session: HubUser, server: str = "") -> bool:
    path = f"/user/{session.login}/" + (f"{server}/" if server else "") + "lab"
    try:
        resp = session.http.get(hub.public_url + path, timeout=30)
    except requests.RequestException:
        return False
    return resp.status_code == 200 and path in resp.url


def test_hub_restart_keeps_servers(
    hub: JupyterHubProcess, alice: HubUser, kube_admin: KubeClient, slurm: SlurmCluster
) -> None:
    spawn(alice)
    spawn(alice, "second", account="proj-gpu")
    uids = {
        s: server_object(kube_admin, "alice", s)["metadata"]["uid"]  # type: ignore[index]
        for s in ("", "second")
    }
    assert lab_ok(hub, alice) and lab_ok(hub, alice, "second")
    hub.restart()
    try:
        for server, uid in uids.items():
            assert live_jobs(slurm, uid), server
            assert server_object(kube_admin, "alice", server)["metadata"]["uid"] == uid  # type: ignore[index]
            model = alice.server_model(server)
            assert model is not None and model["ready"], model
            assert lab_ok(hub, alice, server), server
    finally:
        for server in uids:
            path = f"/users/alice/servers/{server}" if server else "/users/alice/server"
            alice.api("DELETE", path)
        for server, uid in uids.items():
            alice.wait_stopped(server)
            wait_no_live_job(slurm, uid)


def test_traefik_restart_routes_come_back(
    hub: JupyterHubProcess, alice: HubUser, traefik: Traefik, kube_admin: KubeClient
) -> None:
    spawn(alice)
    try:
        assert lab_ok(hub, alice)
        traefik.stop()
        assert not lab_ok(hub, alice)
        traefik.start()
        deadline = time.monotonic() + 30
        while not lab_ok(hub, alice):
            assert time.monotonic() < deadline, "route to alice's server did not come back"
            time.sleep(0.5)
        assert alice.http.get(f"{hub.public_url}/hub/home", timeout=30).status_code == 200
    finally:
        alice.api("DELETE", "/users/alice/server")
        alice.wait_stopped()
        wait_gone(kube_admin, cr_name("alice"))


def test_jupyterlab_renders_in_chromium(
    hub: JupyterHubProcess, kube_admin: KubeClient, tmp_path: Path
) -> None:
    carol = user("carol")
    driver = chromium(tmp_path)
    try:
        driver.get(f"{hub.public_url}/hub/login")
        driver.find_element(By.ID, "username_input").send_keys(carol.login)
        driver.find_element(By.ID, "password_input").send_keys(carol.password)
        driver.find_element(By.ID, "login_submit").click()
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: "/hub/spawn" in d.current_url or "/hub/home" in d.current_url)
        driver.get(f"{hub.public_url}/hub/spawn")
        wait.until(lambda d: d.find_elements(By.ID, "hpchub-account"))
        assert [
            o.get_attribute("value")
            for o in driver.find_elements(By.CSS_SELECTOR, "#hpchub-account option")
        ] == ["proj-astro"]
        start = driver.find_element(
            By.CSS_SELECTOR, "form input[type=submit], form button[type=submit]"
        )
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", start)
        start.click()
        WebDriverWait(driver, 180).until(
            lambda d: (
                "/user/carol/lab" in d.current_url and d.find_elements(By.ID, "jp-main-dock-panel")
            )
        )
        WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Launcher, .jp-LauncherCard")
        )
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "hub-e2e-jupyterlab.png"))
    finally:
        driver.quit()
        session = logged_in(hub, "carol")
        session.api("DELETE", "/users/carol/server")
        session.wait_stopped()
        wait_gone(kube_admin, cr_name("carol"))


def chromium(tmp_path: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1400",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(
        options=options, service=ChromeService(executable_path="/usr/bin/chromedriver")
    )


def test_idle_server_is_culled_and_job_cancelled(
    hub: JupyterHubProcess, kube_admin: KubeClient, slurm: SlurmCluster
) -> None:
    bob = logged_in(hub, "bob")
    spawn(bob, account="proj-bio")
    uid = server_object(kube_admin, "bob")["metadata"]["uid"]  # type: ignore[index]
    began = time.monotonic()
    bob.wait_stopped(limit=CULL_TIMEOUT + 3 * CULL_EVERY + 60)
    assert time.monotonic() - began >= CULL_TIMEOUT - CULL_EVERY - 5
    wait_gone(kube_admin, cr_name("bob"))
    wait_no_live_job(slurm, uid)
