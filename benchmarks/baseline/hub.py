"""Run the baseline JupyterHub as a process and drive it through its REST API."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hpchub_stack.process import ManagedProcess, free_port, log_tail

from ..stack import USERS, Stack, venv_bin

CONFIG = Path(__file__).parent / "jupyterhub_config.py"


class BaselineHub:
    """JupyterHub + SlurmSpawner on the stack; ``spawn``/``stop`` named servers."""

    name = "baseline-hub"

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.dir = stack.root / "baseline-hub"
        self.hub_port = free_port()
        self.token = secrets.token_hex(16)
        self._proc: ManagedProcess | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}/hub/api"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        env = {
            **os.environ,
            "PATH": venv_bin() + os.pathsep + os.environ.get("PATH", ""),
            "BASELINE_PUBLIC_URL": self.stack.traefik.url,
            "BASELINE_HUB_URL": f"http://127.0.0.1:{self.hub_port}",
            "BASELINE_USERS": ",".join(USERS),
            "BASELINE_API_TOKEN": self.token,
            "BASELINE_REDIS_URL": self.stack.redis.url,
            "BASELINE_REDIS_PASSWORD": self.stack.redis.password or "",
            "BASELINE_TRAEFIK_API_URL": self.stack.traefik.api_url,
            "BASELINE_SLURM_CONF": str(self.stack.slurm.conf_path),
            "BASELINE_VENV_BIN": venv_bin(),
            # batchspawner passes the spawner's environment to sbatch only; squeue and
            # scancel run with the hub's own (through sudo -E), as with a site's slurm.conf.
            **self.stack.slurm.env,
        }
        self._proc = ManagedProcess(
            self.name, [str(Path(venv_bin()) / "jupyterhub"), "-f", str(CONFIG)],
            self.dir / "jupyterhub.log", env=env, cwd=self.dir,
            ready=lambda: self.request("GET", "/")[0] == 200, ready_timeout=90)
        self._proc.start()
        for user in USERS:
            self.request("POST", f"/users/{user}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop(grace=60)
            self._proc = None

    def logs(self) -> dict[str, str]:
        return {"jupyterhub.log": log_tail(self.dir / "jupyterhub.log", 80)}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method=method, headers={
            "Authorization": f"token {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
                return int(resp.status), json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return int(exc.code), json.loads(raw)
            except ValueError:
                return int(exc.code), raw.decode(errors="replace")

    # -- servers ----------------------------------------------------------------------------

    def spawn(self, user: str, server: str) -> int:
        return self.request("POST", f"/users/{user}/servers/{server}", {})[0]

    def server_states(self) -> dict[tuple[str, str], dict[str, Any]]:
        """{(user, server name): server model} for every active server."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for user in USERS:
            status, model = self.request("GET", f"/users/{user}")
            if status == 200:
                for sname, srv in (model.get("servers") or {}).items():
                    out[(user, sname)] = srv
        return out

    def wait_ready(self, keys: list[tuple[str, str]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.server_states()
            late = [k for k in keys if not (states.get(k) or {}).get("ready")]
            if not late:
                return
            gone = [k for k in late if k not in states]
            if gone:
                raise RuntimeError(f"baseline servers failed: {gone[:5]}\n"
                                   f"{self.logs()['jupyterhub.log'][-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"baseline servers not ready: {late[:5]}")
            time.sleep(1.0)

    def stop_all(self, timeout: float = 300) -> None:
        for user, sname in self.server_states():
            self.request("DELETE", f"/users/{user}/servers/{sname}", {"remove": True})
        deadline = time.monotonic() + timeout
        while self.server_states():
            if time.monotonic() > deadline:
                raise TimeoutError("baseline servers did not stop")
            time.sleep(1.0)
