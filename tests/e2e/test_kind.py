"""End to end on kind: create the cluster, build and load the images, `helm install` the chart
with the mini HPC (scripts/kind-demo.sh up, the same path as `make kind-demo`), log in and
spawn a server through the hub API on the mini HPC's Slurm, stop it, uninstall.

Skipped, with the reason, where Docker or kind is missing (e.g. the development machines of
this project: no Docker engine). Run: ``pytest -m kind tests/e2e``.
"""

from __future__ import annotations

import http.cookiejar
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORTAL = "http://127.0.0.1:8000"
USER, PASSWORD = "alice", "alice-hpc-pass"  # hpchub_stack.users: the demo users


def _missing() -> str | None:
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return f"`docker info` failed (no Docker engine): {info.stderr.strip()[:200]}"
    return None


REASON = _missing()
pytestmark = [pytest.mark.kind, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@pytest.fixture(scope="module")
def kind_release() -> Iterator[None]:
    script = str(ROOT / "scripts" / "kind-demo.sh")
    subprocess.run(["bash", script, "up"], check=True, timeout=3600)
    try:
        yield
    finally:
        subprocess.run(["bash", script, "down"], check=False, timeout=600)


class Browser:
    """Cookie-keeping HTTP client that speaks to the hub like its web pages do (XSRF)."""

    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def xsrf(self) -> str:
        return next((c.value for c in self.jar if c.name == "_xsrf"), "")

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(PORTAL + path, data=data, method=method,
                                     headers={"X-XSRFToken": self.xsrf(), **(headers or {})})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def login(self, user: str, password: str) -> None:
        self.request("GET", "/hub/login")
        form = urllib.parse.urlencode({"username": user, "password": password,
                                       "_xsrf": self.xsrf()}).encode()
        status, _ = self.request("POST", "/hub/login?next=", form,
                                 {"Content-Type": "application/x-www-form-urlencoded"})
        assert status in (200, 302), status
        assert any(c.name.startswith("jupyterhub-session") or c.name == "jupyterhub-hub-login"
                   for c in self.jar), "no hub login cookie"


def _wait(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(2)


def test_portal_answers(kind_release: None) -> None:
    _wait(lambda: Browser().request("GET", "/hub/health")[0] == 200, 300, "hub health")


def test_login_spawn_on_mini_hpc_and_stop(kind_release: None) -> None:
    browser = Browser()
    browser.login(USER, PASSWORD)
    options = json.dumps({"cluster": "mini", "target": "slurm", "partition": "compute",
                          "time_limit": "0:30:00"}).encode()
    status, body = browser.request("POST", f"/hub/api/users/{USER}/server", options,
                                   {"Content-Type": "application/json"})
    assert status in (201, 202), body

    def ready() -> bool:
        code, raw = browser.request("GET", f"/hub/api/users/{USER}")
        server = json.loads(raw).get("servers", {}).get("", {}) if code == 200 else {}
        return bool(server.get("ready"))

    _wait(ready, 600, "server ready")
    # JupyterLab on the mini HPC's Slurm node, through Traefik.
    code, _ = browser.request("GET", f"/user/{USER}/api/status")
    assert code == 200
    jobs = subprocess.run(
        ["kubectl", "--context", "kind-hpchub", "-n", "hpchub", "exec", "deploy/mini-hpc",
         "--", "env", "SLURM_CONF=/var/lib/mini-hpc/slurm/etc/slurm.conf",
         "squeue", "-h", "-u", USER, "-o", "%j %T"],
        capture_output=True, text=True, check=True).stdout
    assert "RUNNING" in jobs, jobs

    status, body = browser.request("DELETE", f"/hub/api/users/{USER}/server")
    assert status in (202, 204), body
    _wait(lambda: not ready(), 300, "server stopped")
