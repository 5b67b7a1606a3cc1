"""A user's browser-less session with the hub through Traefik: login form, spawn form,
progress stream, REST calls with the XSRF token, and what the stack says about a server."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import requests

from hpchub_api import constants as c
from hpchub_stack.kubeclient import KubeClient
from hpchub_stack.slurm import SlurmCluster

from .fixtures_hub import HUB_NS
from .operator_helpers import job_state, poll_until, slurm_jobs

SERVERS = f"/apis/{c.API_VERSION}/namespaces/{HUB_NS}/{c.SERVER_PLURAL}"
LIVE_JOB_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"}
_XSRF_INPUT = re.compile(r'name="_xsrf"\s+value="([^"]+)"')


class HubUser:
    """One user driving the hub like a browser would (cookies, forms, XSRF)."""

    def __init__(self, public_url: str, login: str) -> None:
        self.url = public_url.rstrip("/")
        self.login = login
        self.http = requests.Session()

    def xsrf(self) -> str:
        token = self.http.cookies.get("_xsrf", path="/hub/")
        if token is None:
            self.http.get(f"{self.url}/hub/login", timeout=10)
            token = self.http.cookies.get("_xsrf", path="/hub/")
        assert token, "no _xsrf cookie from the hub"
        return str(token)

    def log_in(self, password: str) -> requests.Response:
        page = self.http.get(f"{self.url}/hub/login", timeout=10)
        match = _XSRF_INPUT.search(page.text)
        xsrf = match.group(1) if match else self.xsrf()
        return self.http.post(
            f"{self.url}/hub/login?next=",
            data={"username": self.login, "password": password, "_xsrf": xsrf},
            timeout=30,
            allow_redirects=True,
        )

    def spawn_form(self, server: str = "", for_user: str | None = None) -> requests.Response:
        return self.http.get(self._spawn_url(server, for_user), timeout=30)

    def submit_spawn(
        self, fields: dict[str, str], server: str = "", for_user: str | None = None
    ) -> requests.Response:
        data = {**fields, "_xsrf": self.xsrf()}
        return self.http.post(
            self._spawn_url(server, for_user), data=data, timeout=60, allow_redirects=False
        )

    def _spawn_url(self, server: str, for_user: str | None) -> str:
        user = for_user or self.login
        return f"{self.url}/hub/spawn/{user}" + (f"/{server}" if server else "")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-XSRFToken": self.xsrf(), **kwargs.pop("headers", {})}
        return self.http.request(
            method,
            f"{self.url}/hub/api{path}",
            headers=headers,
            timeout=kwargs.pop("timeout", 30),
            **kwargs,
        )

    def progress(self, server: str = "", limit: float = 240) -> Iterator[dict[str, Any]]:
        """The spawn progress events (Server-Sent Events), until ready or failed."""
        path = (
            f"/users/{self.login}/servers/{server}/progress"
            if server
            else (f"/users/{self.login}/server/progress")
        )
        began = time.monotonic()
        with self.api("GET", path, stream=True, timeout=limit) as resp:
            assert resp.status_code == 200, resp.text
            for line in resp.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    yield event
                    if event.get("ready") or event.get("failed"):
                        return
                assert time.monotonic() - began < limit, "progress stream never finished"

    def server_model(self, server: str = "") -> dict[str, Any] | None:
        model = self.api("GET", f"/users/{self.login}").json()
        return (model.get("servers") or {}).get(server)

    def wait_stopped(self, server: str = "", limit: float = 120) -> None:
        poll_until(lambda: self.server_model(server) is None, limit,
                   lambda: f"{self.login}/{server!r} still listed after {limit}s", interval=0.5)


def cr_name(user: str, server: str = "") -> str:
    return f"jupyter-{user}" + (f"--{server}" if server else "")


def server_object(kube: KubeClient, user: str, server: str = "") -> dict[str, Any] | None:
    name = cr_name(user, server)
    return kube.get(f"{SERVERS}/{name}") if kube.exists(f"{SERVERS}/{name}") else None


def wait_gone(kube: KubeClient, name: str, limit: float = 90) -> None:
    poll_until(lambda: not kube.exists(f"{SERVERS}/{name}"), limit,
               lambda: f"{name} still exists: {kube.get(f'{SERVERS}/{name}').get('status')}")


def live_jobs(slurm: SlurmCluster, uid: str) -> list[dict[str, Any]]:
    return [j for j in slurm_jobs(slurm, uid) if job_state(j) in LIVE_JOB_STATES]


def wait_no_live_job(slurm: SlurmCluster, uid: str, limit: float = 60) -> None:
    poll_until(lambda: not live_jobs(slurm, uid), limit,
               lambda: f"Slurm job of {uid} still alive: {live_jobs(slurm, uid)}", interval=0.5)
