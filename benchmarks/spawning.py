"""Shared by scenarios 2 and 3: one spawn, timed, for each system.

hpchub through its hub (:mod:`benchmarks.ourhub`) and batchspawner through its own: the
same ``POST /hub/api/users/<u>/servers/<s>`` -> first 200 through Traefik at
``/user/<u>/<s>/api/status`` (hpchub: the user's own token; batchspawner: its admin token).
hpchub at the JupyterServer level (no hub): create the CR -> first 200 from
``status.url + api/status`` with the server's token.
Each timed spawn returns wall-clock ``t0``/``t200`` and its job id (and, for hpchub, its
JupyterServer's name); :func:`benchmarks.timeline.attach` adds Slurm's own submit -> start from
slurmctld's log (milliseconds) and the stages around it.
"""

from __future__ import annotations

import base64
import os
import pwd
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from hpchub_stack.process import free_port

from .baseline.hub import BaselineHub
from .ourhub import OurHub
from .stack import NS, SERVERS, Stack, failure_messages, server_manifest, venv_bin


def http_code(url: str, token: str | None = None, timeout: float = 5) -> int:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


# ------------------------------------------------------------------------ hpchub


def hpchub_begin(stack: Stack, name: str, user: str) -> float:
    t0 = time.time()
    stack.admin.create(SERVERS, server_manifest(name, user, "local"))
    return t0


def hpchub_wait(stack: Stack, name: str, t0: float, limit: float) -> dict[str, Any]:
    """Poll the CR until it has a URL, then the URL until 200; return timings."""
    token = None
    while time.time() - t0 < limit:
        obj = stack.admin.get(f"{SERVERS}/{name}")
        st = obj.get("status") or {}
        if st.get("phase") == "Failed":
            raise RuntimeError(f"{name}: {failure_messages(stack.admin, [name])}")
        if st.get("url") and st.get("tokenSecret"):
            if token is None:
                sec = stack.admin.get(f"/api/v1/namespaces/{NS}/secrets/{st['tokenSecret']}")
                token = base64.b64decode(sec["data"]["token"]).decode()
            if http_code(st["url"] + "api/status", token) == 200:
                t200 = time.time()
                return {"total_s": t200 - t0, "t0": t0, "t200": t200,
                        "job_id": st["jobId"], "server": name}
        time.sleep(0.05)
    raise TimeoutError(f"{name} not usable after {limit:.0f}s")


# ------------------------------------------------------------------------ hpchub's hub


def hub_begin(hub: OurHub | BaselineHub, user: str, server: str) -> float:
    """Ask ``hub`` for a server through its REST API; the (wall-clock) time of the request."""
    t0 = time.time()
    status = hub.spawn(user, server)
    if status not in (201, 202):
        raise RuntimeError(f"{hub.name} spawn {user}/{server}: HTTP {status}")
    return t0


def ourhub_wait(stack: Stack, hub: OurHub, user: str, server: str, t0: float,
                limit: float) -> dict[str, Any]:
    return _wait_usable(stack, hub.server_url(user, server) + "api/status", hub.tokens[user],
                        lambda: hub.job_of(user, server), t0, limit, f"hpchub {user}/{server}")


def _wait_usable(stack: Stack, url: str, token: str,
                 job_of: Callable[[], tuple[str | None, str | None]],
                 t0: float, limit: float, what: str) -> dict[str, Any]:
    """Poll ``url`` until 200; the time since ``t0`` and (job id, JupyterServer name)."""
    while time.time() - t0 < limit:
        if http_code(url, token) == 200:
            t200 = time.time()
            job, name = job_of()
            return {"total_s": t200 - t0, "t0": t0, "t200": t200, "job_id": job,
                    "server": name}
        time.sleep(0.05)
    raise TimeoutError(f"{what} not usable after {limit:.0f}s")


# ------------------------------------------------------------------------ batchspawner


def baseline_wait(stack: Stack, hub: BaselineHub, user: str, server: str, t0: float,
                  limit: float) -> dict[str, Any]:
    def job_of() -> tuple[str | None, str | None]:
        job = baseline_job(stack, user, server)
        return (str(job["job_id"]) if job else None), None

    return _wait_usable(stack, f"{stack.traefik.url}/user/{user}/{server}/api/status",
                        hub.token, job_of, t0, limit, f"baseline {user}/{server}")


def baseline_job(stack: Stack, user: str, server: str) -> dict[str, Any]:
    """The newest running batchspawner job of ``user`` (spawns of one user are serialised
    by the scenarios, so this is the one just started)."""
    _, body = stack.slurm.rest_request("GET", "jobs", "slurm")
    mine = [j for j in body.get("jobs", []) if j.get("user_name") == user
            and j.get("name") == "spawner-jupyterhub"]
    return max(mine, key=lambda j: int(j["job_id"])) if mine else {}


# ------------------------------------------------------------------------ app boot


def app_boot_seconds(user: str = "alice") -> float:
    """Process start -> first HTTP answer of ``jupyter-lab`` run directly as ``user``
    (no Slurm, no hub): the app's own boot, subtracted from both systems' spawn times."""
    port = free_port()
    exe = os.path.join(venv_bin(), "jupyter-lab")
    pw = pwd.getpwnam(user)
    home = pw.pw_dir
    env = {"PATH": venv_bin() + ":/usr/bin:/bin", "HOME": home, "JUPYTER_TOKEN": "bench"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--", exe,
         "--ip=127.0.0.1", f"--port={port}", "--no-browser", "--ServerApp.port_retries=0"],
        env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        while time.monotonic() - t0 < 120:
            if http_code(f"http://127.0.0.1:{port}/api/status", "bench") == 200:
                return time.monotonic() - t0
            time.sleep(0.05)
        raise TimeoutError("jupyter-lab did not boot in 120 s")
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
