"""Network isolation of the launched app, seen by another user of the same node.

The launcher runs as alice with HPCHUB_ISOLATION=required and starts a real JupyterLab in
bwrap + slirp4netns. A site config makes the server start a second app inside the sandbox
(the way a jupyter-server-proxy app runs). Bob, on the same machine, must reach neither
the app's own port inside the sandbox nor the second app, on any address of the node;
through the forwarded port that the launcher reported, the server answers (and proxies
the second app only to whoever has the token). SIGTERM leaves no process of alice behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .fixtures_launcher import (
    OPERATOR_SRC,
    REPORT_TIMEOUT,
    USER,
    Launch,
    Operator,
    cmdline,
    eventually,
    has_marker,
    next_report,
    running,
)

OTHER_USER = "bob"

# Started by the server at startup, inside the sandbox, like a proxied app would be.
SECOND_APP_CONFIG = """\
import os, subprocess, sys
subprocess.Popen(
    [sys.executable, "-m", "http.server", os.environ["SECOND_APP_PORT"], "--bind", "0.0.0.0"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
"""

# Run as bob: try each (host, port), then GET urls with alice's token; print the outcomes.
BOB_PROBE = """\
import json, socket, sys, urllib.error, urllib.request
targets, urls, token = json.loads(sys.argv[1])
out = {"connect": {}, "http": {}}
for host, port in targets:
    try:
        socket.create_connection((host, port), timeout=3).close()
        out["connect"][f"{host}:{port}"] = "open"
    except OSError as exc:
        out["connect"][f"{host}:{port}"] = type(exc).__name__
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for url in urls:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with opener.open(req, timeout=30) as resp:
            out["http"][url] = resp.status
    except urllib.error.HTTPError as exc:
        out["http"][url] = exc.code
    except OSError as exc:
        out["http"][url] = type(exc).__name__
print(json.dumps(out))
"""


def probe_as_bob(
    targets: list[tuple[str, int]], urls: list[str], token: str
) -> dict[str, dict[str, object]]:
    """What bob gets: per host:port "open" or the error, per URL the HTTP status."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", BOB_PROBE, json.dumps([targets, urls, token])],
        user=OTHER_USER,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, dict[str, object]] = json.loads(done.stdout)
    return result


def node_addresses() -> list[str]:
    """Loopback and every IPv4 address of this machine."""
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False)
    return ["127.0.0.1", *(a for a in found.stdout.split() if ":" not in a)]


def listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state in the network namespace of ``pid`` (IPv4 and IPv6)."""
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def alice_processes(run: Launch) -> list[int]:
    """Processes of alice that ``ps`` lists and that this launch started (the marker)."""
    listed = subprocess.run(
        ["ps", "-u", USER, "-o", "pid="], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in listed.stdout.split() if has_marker(int(pid), run.marker)]


def the_process(run: Launch, program: str) -> int:
    """The process of this launch running ``program`` (argv[0], or argv[1] of a script)."""
    return next(
        p for p in run.processes() if any(a.endswith(f"/{program}") for a in cmdline(p)[:2])
    )


def alive(pid: int) -> bool:
    """True while ``pid`` exists."""
    return Path(f"/proc/{pid}").exists()


def slirp_api_sockets() -> list[Path]:
    """slirp4netns API sockets left in the temporary directory."""
    return list(Path(tempfile.gettempdir()).glob("hpchub-slirp-*/api.sock"))


def port_option(pid: int) -> int:
    """The --port=N the process was started with."""
    return int(next(a for a in cmdline(pid) if a.startswith("--port=")).split("=", 1)[1])


# A quick stand-in for jupyter-lab: answers /api, exits on SIGTERM.
STAND_IN_APP = """\
import http.server, sys
port = int(next(a for a in sys.argv if a.startswith("--port=")).split("=")[1])
class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
http.server.HTTPServer(("0.0.0.0", port), Api).serve_forever()
"""


def _bare_env(home: Path, **programs: str) -> Path:
    """A bin/ with python3 and the stand-in jupyter-lab, plus ``programs`` (name -> target
    for a symlink, or a script starting with #!)."""
    bindir = home / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "python3").symlink_to("/usr/bin/python3")
    (bindir / "jupyter-lab").write_text("#!/usr/bin/python3\n" + STAND_IN_APP)
    (bindir / "jupyter-lab").chmod(0o755)
    for name, target in programs.items():
        if target.startswith("#!"):
            (bindir / name).write_text(target)
            (bindir / name).chmod(0o755)
        else:
            (bindir / name).symlink_to(target)
    return bindir


def _bare_launcher(bindir: Path) -> list[str]:
    """The launcher from its source, on the bare python3 of ``bindir``."""
    return [str(bindir / "python3"), "-m", "hpchub_launch"]


BARE = {"PYTHONPATH": str(OPERATOR_SRC), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


async def test_only_the_forwarded_port_is_reachable_by_another_user(
    callback_operator: Operator, alice_home: Path
) -> None:
    config_dir = alice_home / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.py").write_text(SECOND_APP_CONFIG)
    second_port = 47000 + os.getpid() % 2000
    async with running(
        callback_operator,
        alice_home,
        HPCHUB_ISOLATION="required",
        JUPYTER_CONFIG_DIR=str(config_dir),
        SECOND_APP_PORT=str(second_port),
    ) as run:
        report = await next_report(callback_operator.reports[run.uid], run, REPORT_TIMEOUT)
        assert report.failure is None, report.failure
        assert report.port is not None
        forwarded = report.port
        assert "isolated: port" in run.log()

        # The app listens on its own port inside the sandbox's network namespace, with the
        # second app beside it; neither is listening in the node's namespace.
        app_pid = the_process(run, "jupyter-lab")
        inner = port_option(app_pid)
        assert inner != forwarded
        await eventually(
            lambda: {inner, second_port} <= listening_ports(app_pid), 30, "both apps to listen"
        )
        assert not {inner, second_port} & listening_ports(os.getpid())
        assert os.readlink(f"/proc/{app_pid}/ns/net") != os.readlink("/proc/self/ns/net")

        base = f"http://127.0.0.1:{forwarded}"
        targets = [(host, port) for host in node_addresses() for port in (inner, second_port)]
        seen = await asyncio.to_thread(
            probe_as_bob,
            targets,
            [f"{base}/api", f"{base}/proxy/{second_port}/"],
            run.jupyter_token,
        )
        assert "open" not in seen["connect"].values(), (seen, run.log())
        assert seen["http"] == {f"{base}/api": 200, f"{base}/proxy/{second_port}/": 200}, (
            seen,
            run.log(),
        )
        without_token = await asyncio.to_thread(probe_as_bob, [], [f"{base}/api/status"], "")
        assert without_token["http"] == {f"{base}/api/status": 403}

        # SIGTERM: the app, the second app, bwrap and slirp4netns all go.
        helpers = [the_process(run, "bwrap"), the_process(run, "slirp4netns")]
        run.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(run.proc.wait(), 30)
        assert code == 0, run.log()
        await eventually(lambda: not alice_processes(run), 10, "every process of alice to exit")
        assert not any(alive(pid) for pid in helpers)
        assert not slirp_api_sockets()


async def test_required_isolation_fails_without_slirp4netns(
    callback_operator: Operator, alice_home: Path
) -> None:
    async with running(
        callback_operator,
        alice_home,
        HPCHUB_ISOLATION="required",
        PATH=str(_bare_env(alice_home, bwrap="/usr/bin/bwrap")),
    ) as run:
        report = await next_report(callback_operator.reports[run.uid], run, 30)
        code = await asyncio.wait_for(run.proc.wait(), 30)
        assert not run.processes()
    assert report.port is None
    assert report.failure == (
        "network isolation is required but unavailable: slirp4netns is not on PATH"
    )
    assert code == 4


async def test_optional_isolation_runs_unisolated_with_a_warning(
    callback_operator: Operator, alice_home: Path
) -> None:
    bindir = _bare_env(alice_home, bwrap="/usr/bin/bwrap")
    async with running(
        callback_operator,
        alice_home,
        _bare_launcher(bindir),
        HPCHUB_ISOLATION="optional",
        PATH=str(bindir),
        **BARE,
    ) as run:
        report = await next_report(callback_operator.reports[run.uid], run, 60)
        assert report.port is not None, report.failure
        app_pid = the_process(run, "jupyter-lab")
        assert port_option(app_pid) == report.port
        assert os.readlink(f"/proc/{app_pid}/ns/net") == os.readlink("/proc/self/ns/net")
        assert "network isolation unavailable (slirp4netns is not on PATH)" in run.log()
        assert "running unisolated" in run.log()
        run.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(run.proc.wait(), 30)
        await eventually(lambda: not alice_processes(run), 10, "every process of alice to exit")


async def test_required_isolation_reports_why_bwrap_failed(
    callback_operator: Operator, alice_home: Path
) -> None:
    failing = "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n"
    bindir = _bare_env(alice_home, bwrap=failing, slirp4netns="/usr/bin/slirp4netns")
    async with running(
        callback_operator,
        alice_home,
        _bare_launcher(bindir),
        HPCHUB_ISOLATION="required",
        PATH=str(bindir),
        **BARE,
    ) as run:
        report = await next_report(callback_operator.reports[run.uid], run, 30)
        code = await asyncio.wait_for(run.proc.wait(), 30)
        assert not run.processes()
    assert report.port is None
    assert report.failure == (
        "network isolation failed: bwrap could not create the sandbox (exit status 1); "
        "stderr: bwrap: No permissions to creating new namespace"
    )
    assert code == 4


async def test_the_server_stops_when_its_network_helper_dies(
    callback_operator: Operator, alice_home: Path
) -> None:
    bindir = _bare_env(alice_home, bwrap="/usr/bin/bwrap", slirp4netns="/usr/bin/slirp4netns")
    async with running(
        callback_operator,
        alice_home,
        _bare_launcher(bindir),
        HPCHUB_ISOLATION="required",
        PATH=str(bindir),
        **BARE,
    ) as run:
        report = await next_report(callback_operator.reports[run.uid], run, 60)
        assert report.port is not None, report.failure
        os.kill(the_process(run, "slirp4netns"), signal.SIGKILL)
        await asyncio.wait_for(run.proc.wait(), 30)
        await eventually(lambda: not alice_processes(run), 10, "every process of alice to exit")
        assert "slirp4netns exited: the server is unreachable, stopping it" in run.log()
