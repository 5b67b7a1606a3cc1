"""hpchub's own hub for scenarios 2 and 3, driven the way users drive it.

The project's JupyterHub configuration (``hub/jupyterhub_config.py``: LDAP authenticator,
PostgreSQL, the JupyterServer spawner, TraefikRedisProxy on the stack's Traefik) runs as a
process with the stack's services. Each benchmark user logs in through Traefik with their
LDAP password and creates an API token for themselves; spawns are then
``POST /hub/api/users/<u>/servers/<s>`` with that token (the same request the baseline gets
with its admin token), and "usable" is the first 200 from ``/user/<u>/<s>/api/status``
through Traefik, as for the baseline.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import requests

from hpchub_api import constants as c
from hpchub_stack.hub import JupyterHubProcess
from hpchub_stack.hub_setup import HUB_NS, hub_settings, prepare_hub
from hpchub_stack.users import user as hpc_user

from .stack import USERS, Stack

SERVERS = f"/apis/{c.API_VERSION}/namespaces/{HUB_NS}/{c.SERVER_PLURAL}"
_XSRF_INPUT = re.compile(r'name="_xsrf"\s+value="([^"]+)"')


class OurHub:
    """The project's hub on the benchmark stack, with one API token per user."""

    name = "hpchub-hub"

    def __init__(self, stack: Stack, named_servers: int) -> None:
        self.stack = stack
        self.named_servers = named_servers
        self.tokens: dict[str, str] = {}
        self._proc: JupyterHubProcess | None = None

    @property
    def url(self) -> str:
        return self.stack.traefik.url

    def start(self) -> None:
        stack = self.stack
        root = stack.root / "hpchub-hub"
        root.mkdir(parents=True, exist_ok=True)
        kubeconfig = prepare_hub(stack.kube, stack.admin, root)
        settings = hub_settings(kubeconfig, stack.ldap, stack.postgres, stack.redis,
                                stack.traefik)
        settings.update({
            "HPCHUB_NAMED_SERVER_LIMIT": str(self.named_servers),
            "HPCHUB_START_TIMEOUT": "900",
            "HPCHUB_CULL_ENABLED": "false",
            "HPCHUB_SHUTDOWN_ON_LOGOUT": "false",
        })
        self._proc = JupyterHubProcess(root, settings, public_url=stack.traefik.url)
        self._proc.start()
        for login in USERS:
            self.tokens[login] = self._log_in_and_make_token(login)

    def _log_in_and_make_token(self, login: str) -> str:
        """Log in with the LDAP password (login form, through Traefik); create a token."""
        http = requests.Session()
        page = http.get(f"{self.url}/hub/login", timeout=30)
        match = _XSRF_INPUT.search(page.text)
        xsrf = match.group(1) if match else http.cookies.get("_xsrf", path="/hub/")
        resp = http.post(f"{self.url}/hub/login?next=",
                         data={"username": login, "password": hpc_user(login).password,
                               "_xsrf": xsrf}, timeout=60)
        if resp.status_code != 200 or "/hub/login" in resp.url:
            raise RuntimeError(f"{login} could not log in: HTTP {resp.status_code} {resp.url}")
        xsrf = http.cookies.get("_xsrf", path="/hub/") or xsrf
        resp = http.post(f"{self.url}/hub/api/users/{login}/tokens",
                         json={"note": "benchmark", "expires_in": 6 * 3600,
                               "scopes": ["inherit"]},
                         headers={"X-XSRFToken": str(xsrf)}, timeout=30)
        if resp.status_code != 201:
            raise RuntimeError(f"{login}: token refused: HTTP {resp.status_code} {resp.text}")
        return str(resp.json()["token"])

    def api(self, method: str, login: str, path: str, body: Any = None,
            timeout: float = 60) -> requests.Response:
        return requests.request(method, f"{self.url}/hub/api{path}", json=body,
                                headers={"Authorization": f"token {self.tokens[login]}"},
                                timeout=timeout)

    def spawn(self, login: str, server: str) -> int:
        """Ask for a server with the form's defaults and the user's first project."""
        options = {"account": hpc_user(login).projects[0]}
        return self.api("POST", login, f"/users/{login}/servers/{server}", options).status_code

    def server_url(self, login: str, server: str) -> str:
        return f"{self.url}/user/{login}/{server}/"

    def job_of(self, login: str, server: str) -> tuple[str | None, str | None]:
        """(Slurm job id, name) of the JupyterServer the spawner created for a server."""
        selector = f"{c.LABEL_USER}={login},{c.LABEL_SERVER_NAME}={server}"
        items = self.stack.admin.get(f"{SERVERS}?labelSelector={selector}")["items"]
        for obj in items:
            job = (obj.get("status") or {}).get("jobId")
            if job:
                return str(job), str(obj["metadata"]["name"])
        return None, None

    def servers(self) -> dict[tuple[str, str], dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for login in USERS:
            resp = self.api("GET", login, f"/users/{login}")
            if resp.status_code == 200:
                for sname, srv in (resp.json().get("servers") or {}).items():
                    out[(login, sname)] = srv
        return out

    def stop_all(self, timeout: float = 300) -> None:
        """Stop every server through the hub and wait until the JupyterServers are gone."""
        for login, sname in self.servers():
            self.api("DELETE", login, f"/users/{login}/servers/{sname}", {"remove": True})
        deadline = time.monotonic() + timeout
        while self.servers() or self.stack.admin.get(SERVERS)["items"]:
            if time.monotonic() > deadline:
                raise TimeoutError("hpchub hub servers did not stop")
            time.sleep(1.0)

    def stop(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self.stop_all()
            self._proc.stop()
            self._proc = None

    def logs(self) -> dict[str, str]:
        return self._proc.logs() if self._proc else {}
