"""Scenario 5 — proxy: route latency and memory under churn, Traefik vs CHP, same run.

Traefik as hpchub configures it: jupyterhub-traefik-proxy's ``TraefikRedisProxy`` API
writing to the stack's Redis, read by the stack's Traefik (Redis provider, 200 ms throttle).
configurable-http-proxy: the npm package (installed into ~/.cache/hpchub/chp), driven by
JupyterHub's own ``ConfigurableHTTPProxy`` API client. Both proxies route to one small
backend. Latency: ``add_route`` called -> first 200 through the proxy, and ``delete_route``
called -> first 404, over 100 routes one at a time. Memory: proxy RSS sampled while routes
are added and deleted in batches of 50 (each routed once while present: the traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from hpchub_stack.process import ManagedProcess, free_port, tcp_open

from ..measure import proc_rss_mb, slope_per, summary, tree_pids
from ..stack import Stack, log

CHP_DIR = Path.home() / ".cache" / "hpchub" / "chp"
LATENCY_ROUTES = 100
BATCH = 50
CYCLES = {"quick": 1000, "full": 10000}


def chp_binary() -> str:
    """configurable-http-proxy from the npm cache dir, installed on first use."""
    exe = CHP_DIR / "node_modules" / ".bin" / "configurable-http-proxy"
    if not exe.exists():
        if shutil.which("npm") is None:
            raise RuntimeError("npm is needed to install configurable-http-proxy")
        CHP_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--prefix", str(CHP_DIR),
                        "configurable-http-proxy@5"], check=True, timeout=600)
    return str(exe)


class _Backend(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        return


def start_backend() -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def traefik_pid(stack: Stack) -> int:
    marker = f"--configFile={stack.traefik.config_path}"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    return int(entry)
    raise RuntimeError("traefik process not found")


def rss_of_tree(pid: int) -> float:
    total = 0.0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            total += proc_rss_mb(p)
    return total


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(url, allow_redirects=False) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientError:
        return 0


async def _wait_status(session: aiohttp.ClientSession, url: str, want: int,
                       limit: float = 30) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit:
        if await _status(session, url) == want:
            return time.monotonic()
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{url} never answered {want}")


async def measure_proxy(name: str, proxy: Any, public_url: str, pid: int, backend: str,
                        cycles: int) -> dict[str, Any]:
    add_s, delete_s = [], []
    # A route that stays, as the hub's own does: Traefik skips an empty dynamic
    # configuration, so without one the last route of a provider is never removed.
    await proxy.add_route("/hub/", backend, {"hub": True})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for i in range(LATENCY_ROUTES):
            spec = f"/user/lat{i}/"
            t0 = time.monotonic()
            await proxy.add_route(spec, backend, {"user": f"lat{i}"})
            add_s.append(await _wait_status(session, public_url + spec, 200) - t0)
            t0 = time.monotonic()
            await proxy.delete_route(spec)
            delete_s.append(await _wait_status(session, public_url + spec, 404) - t0)
        log(f"scenario 5: {name}: latency done; {cycles} add/delete cycles")
        series = [{"cycles": 0, "rss_mb": rss_of_tree(pid)}]
        done = 0
        while done < cycles:
            specs = [f"/user/c{done + k}/" for k in range(min(BATCH, cycles - done))]
            await asyncio.gather(*(proxy.add_route(s, backend, {"user": s}) for s in specs))
            for spec in specs:
                await _wait_status(session, public_url + spec, 200)
            await asyncio.gather(*(proxy.delete_route(s) for s in specs))
            done += len(specs)
            series.append({"cycles": done, "rss_mb": rss_of_tree(pid)})
    await proxy.delete_route("/hub/")
    half = series[len(series) // 2:]
    return {"add_s": summary(add_s), "delete_s": summary(delete_s), "rss_series": series,
            "rss_start_mb": series[0]["rss_mb"], "rss_end_mb": series[-1]["rss_mb"],
            "rss_growth_mb_per_1000": slope_per([p["cycles"] for p in half],
                                                [p["rss_mb"] for p in half], 1000)}


async def _traefik(stack: Stack, backend: str, cycles: int) -> dict[str, Any]:
    from jupyterhub_traefik_proxy.redis import TraefikRedisProxy

    proxy = TraefikRedisProxy(
        should_start=False, enable_setup_dynamic_config=False,
        redis_url=stack.redis.url, redis_password=stack.redis.password or "",
        kv_traefik_prefix="traefik", traefik_api_url=stack.traefik.api_url,
        traefik_api_username="", traefik_api_password="", traefik_entrypoint="web",
        public_url=stack.traefik.url)
    return await measure_proxy("traefik", proxy, stack.traefik.url, traefik_pid(stack),
                               backend, cycles)


async def _chp(stack: Stack, backend: str, cycles: int) -> dict[str, Any]:
    from jupyterhub.proxy import ConfigurableHTTPProxy

    port, api_port, token = free_port(), free_port(), secrets.token_hex(16)
    proc = ManagedProcess(
        "configurable-http-proxy",
        [chp_binary(), "--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
         "--api-port", str(api_port), "--log-level", "warn"],
        stack.root / "chp" / "chp.log", env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": token},
        ready=lambda: tcp_open("127.0.0.1", api_port), ready_timeout=30)
    proc.start()
    try:
        proxy = ConfigurableHTTPProxy(should_start=False, auth_token=token,
                                      api_url=f"http://127.0.0.1:{api_port}")
        assert proc.pid is not None
        return await measure_proxy("chp", proxy, f"http://127.0.0.1:{port}", proc.pid,
                                   backend, cycles)
    finally:
        proc.stop()


def run(stack: Stack, mode: str) -> dict[str, Any]:
    cycles = CYCLES[mode]
    server, backend = start_backend()
    try:
        log("scenario 5: traefik")
        traefik = asyncio.run(_traefik(stack, backend, cycles))
        log("scenario 5: configurable-http-proxy")
        chp = asyncio.run(_chp(stack, backend, cycles))
    finally:
        server.shutdown()
    growth = traefik["rss_growth_mb_per_1000"]
    return {"scenario": 5, "title": "Proxy", "cycles": cycles, "traefik": traefik,
            "chp": chp,
            "target": "no memory growth trend for Traefik (slope over the second half "
                      "< 1 MB per 1000 cycles)",
            "target_met": growth < 1.0,
            "target_note": f"Traefik {growth:+.2f} MB/1000 cycles, "
                           f"CHP {chp['rss_growth_mb_per_1000']:+.2f} MB/1000 cycles"}
