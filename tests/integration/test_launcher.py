"""The real ``hpchub-launch``, run as user alice, against a real callback server.

Standalone mode starts a real JupyterLab: the launcher must report its port, the server must
answer with the token from $JUPYTER_TOKEN, and SIGTERM to the launcher must leave no
process behind (a kernel, which runs in its own session, included). Failures must come
back as a failure report with a useful reason, fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from hpchub_launch.app import can_bind, ephemeral_ports
from hpchub_operator.callback import server_token

from .fixtures_launcher import (
    LAUNCHER,
    OPERATOR_SRC,
    REPORT_TIMEOUT,
    SECRET,
    USER,
    Launch,
    Operator,
    cmdline,
    environ_of,
    eventually,
    http,
    next_report,
    owner,
    running,
)

# ------------------------------------------------------------------------------ tests


async def test_jupyterlab_reports_its_port_and_stops_on_sigterm(
    callback_operator: Operator, alice_home: Path
) -> None:
    async with running(callback_operator, alice_home) as run:
        report = await next_report(callback_operator.reports[run.uid], run, REPORT_TIMEOUT)
        assert report.failure is None, report.failure
        assert run.uid not in callback_operator.started  # the job script sends the hint
        assert report.port is not None and 20000 <= report.port <= 60000
        base = f"http://127.0.0.1:{report.port}"

        assert await asyncio.to_thread(http, "GET", f"{base}/api", run.jupyter_token) == 200
        assert await asyncio.to_thread(http, "GET", f"{base}/api/status", run.jupyter_token) == 200
        assert await asyncio.to_thread(http, "GET", f"{base}/api/status") == 403

        # The app runs as alice, from the launcher, with no secret on its command line or
        # the callback token in its environment.
        app_pid = next(
            p
            for p in run.processes()
            if p != run.proc.pid and "jupyter-lab" in " ".join(cmdline(p))
        )
        assert owner(app_pid) == pwd.getpwnam(USER).pw_uid
        assert b"HPCHUB_CALLBACK_TOKEN" not in environ_of(app_pid)
        assert run.jupyter_token not in " ".join(cmdline(app_pid))
        assert os.getpgid(app_pid) == app_pid != os.getpgid(run.proc.pid)

        # A kernel runs in a session of its own: it must be stopped too.
        assert (
            await asyncio.to_thread(http, "POST", f"{base}/api/kernels", run.jupyter_token) == 201
        )
        await eventually(
            lambda: any("ipykernel_launcher" in " ".join(cmdline(p)) for p in run.processes()),
            60,
            "the kernel process",
        )

        run.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(run.proc.wait(), 30)
        assert code == 0, run.log()
        await eventually(lambda: not run.processes(), 10, "every launched process to exit")
        assert "HPCHUB_CALLBACK_TOKEN" not in run.log() and SECRET.hex() not in run.log()
        assert server_token(SECRET, run.uid) not in run.log()


async def test_report_started_sends_the_hint_and_exits(
    callback_operator: Operator, alice_home: Path
) -> None:
    async with running(callback_operator, alice_home,
                       [str(LAUNCHER), "--report-started"]) as run:
        code = await asyncio.wait_for(run.proc.wait(), 30)
        assert code == 0, run.log()
        assert run.uid in callback_operator.started
        assert callback_operator.reports[run.uid].empty()  # a hint, not a port or failure
    # Without the callback settings there is nothing to report to: a configuration error.
    async with running(callback_operator, alice_home, [str(LAUNCHER), "--report-started"],
                       HPCHUB_CALLBACK_URL="") as run:
        assert await asyncio.wait_for(run.proc.wait(), 30) == 2, run.log()


async def test_missing_working_directory_is_reported_at_once(
    callback_operator: Operator, alice_home: Path
) -> None:
    missing = alice_home / "no-such-project"
    started = time.monotonic()
    async with running(callback_operator, alice_home, HPCHUB_WORKDIR=str(missing)) as run:
        report = await next_report(callback_operator.reports[run.uid], run, 30)
        code = await asyncio.wait_for(run.proc.wait(), 30)
    assert time.monotonic() - started < 15
    assert report.port is None
    assert report.failure == (
        f"cannot start jupyter-lab: working directory {missing}: No such file or directory"
    )
    assert code == 4


async def test_app_crash_is_reported_with_the_end_of_its_stderr(
    callback_operator: Operator, alice_home: Path
) -> None:
    """A site configuration that makes jupyter-server refuse to start."""
    config_dir = alice_home / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"root_dir": "/nonexistent/notebooks"}})
    )
    async with running(callback_operator, alice_home, JUPYTER_CONFIG_DIR=str(config_dir)) as run:
        report = await next_report(callback_operator.reports[run.uid], run, 60)
        code = await asyncio.wait_for(run.proc.wait(), 30)
        assert not run.processes()
    assert report.port is None and report.failure is not None
    assert report.failure.startswith("jupyter-lab exited with status 1 before answering")
    assert "/nonexistent/notebooks" in report.failure
    assert len(report.failure) <= 1000 and report.failure.isprintable()
    assert code == 4


# A stand-in for jupyter-lab that ignores SIGTERM and leaves a process in a session of its own,
# so only the launcher's SIGKILL escalation and its leftover sweep can stop everything.
STUBBORN_APP = """\
import http.server, signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
port = int(next(a for a in sys.argv if a.startswith("--port=")).split("=")[1])
subprocess.Popen(["sleep", "600"], start_new_session=True)
class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
http.server.HTTPServer(("127.0.0.1", port), Api).serve_forever()
"""


def _bare_env_with(home: Path, app_source: str) -> Path:
    """A bin/ with a symlink to the system Python and a stand-in jupyter-lab beside it;
    returns that python3."""
    bindir = home / "env" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python3").symlink_to("/usr/bin/python3")
    app = bindir / "jupyter-lab"
    app.write_text("#!/usr/bin/python3\n" + app_source)
    app.chmod(0o755)
    return bindir / "python3"


def running_bare(operator: Operator, home: Path, app_source: str,
                 **extra: str) -> contextlib.AbstractAsyncContextManager[Launch]:
    """``running`` of the launcher from a bare /usr/bin/python3 (only its own source on
    PYTHONPATH) with ``app_source`` as its jupyter-lab."""
    python = _bare_env_with(home, app_source)
    return running(operator, home, [str(python), "-m", "hpchub_launch"],
                   PYTHONPATH=str(OPERATOR_SRC), PYTHONNOUSERSITE="1", **extra)


async def test_stubborn_app_and_its_escaped_children_are_killed(
    callback_operator: Operator, alice_home: Path
) -> None:
    """Also proves the launcher needs nothing but the standard library: it runs from a
    bare /usr/bin/python3 with only its own source on PYTHONPATH."""
    async with running_bare(
        callback_operator,
        alice_home,
        STUBBORN_APP,
        HPCHUB_STOP_GRACE="1",
        PYTHONDONTWRITEBYTECODE="1",
    ) as run:
        report = await next_report(callback_operator.reports[run.uid], run, 60)
        assert report.port is not None, report.failure
        await eventually(
            lambda: any(cmdline(p)[:1] == ["sleep"] for p in run.processes()),
            10,
            "the escaped child",
        )
        started = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(run.proc.wait(), 30)
        assert code == 128 + signal.SIGKILL, run.log()
        assert time.monotonic() - started < 10
        await eventually(lambda: not run.processes(), 10, "every launched process to exit")
        assert "outlived its 1 s grace" in run.log()
        assert "stopping 1 leftover process(es)" in run.log()


# A stand-in for jupyter-lab whose first start loses its port the way a busy node makes it
# happen: another program binds the port after the launcher checked it and before the app
# does, and the app dies of EADDRINUSE. The second start serves.
PORT_THIEF_APP = """\
import http.server, pathlib, subprocess, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
ip, port = args["ip"], int(args["port"])
first = pathlib.Path.home() / "first-port"
if not first.exists():
    first.write_text(str(port))
    thief = subprocess.Popen(
        [sys.executable, "-c",
         "import socket, sys, time\\n"
         "s = socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()\\n"
         "print('holding', flush=True); time.sleep(600)", ip, str(port)],
        stdout=subprocess.PIPE, start_new_session=True)
    thief.stdout.readline()
class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
http.server.HTTPServer((ip, port), Api).serve_forever()
"""


async def test_a_port_taken_before_the_app_binds_it_is_replaced(
    callback_operator: Operator, alice_home: Path
) -> None:
    async with running_bare(
        callback_operator,
        alice_home,
        PORT_THIEF_APP,
        HPCHUB_STOP_GRACE="1",
    ) as run:
        report = await next_report(callback_operator.reports[run.uid], run, 60)
        assert report.failure is None, run.log()
        lost = int((alice_home / "first-port").read_text())
        assert report.port is not None and report.port != lost, run.log()
        assert f"port {lost} was taken before jupyter-lab listened on it" in run.log()
        # The default range (20000-60000) without the kernel's ephemeral ports.
        ephemeral = ephemeral_ports()
        assert report.port not in ephemeral and lost not in ephemeral, (ephemeral, run.log())


SERVING_APP = """\
import http.server, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
http.server.HTTPServer((args["ip"], int(args["port"])), Api).serve_forever()
"""


async def test_the_app_does_not_outlive_a_killed_launcher(
    callback_operator: Operator, alice_home: Path
) -> None:
    """SIGKILL of the launcher alone (the app leads its own process group, so killing the
    launcher's group would not reach it): the kernel SIGTERMs the app."""
    async with running_bare(
        callback_operator,
        alice_home,
        SERVING_APP,
    ) as run:
        report = await next_report(callback_operator.reports[run.uid], run, 60)
        assert report.port is not None, run.log()
        apps = [p for p in run.processes() if p != run.proc.pid]
        assert apps, run.log()
        os.kill(run.proc.pid, signal.SIGKILL)
        await asyncio.wait_for(run.proc.wait(), 10)
        await eventually(lambda: not run.processes(), 10, "the app to exit after its launcher")


# A stand-in whose first start waits until the test has taken its port (and answers HTTP
# there, as another server starting on the node would) before it tries to bind it.
WAITS_FOR_THIEF_APP = """\
import http.server, pathlib, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
ip, port = args["ip"], int(args["port"])
home = pathlib.Path.home()
if not (home / "first-port").exists():
    (home / "first-port").write_text(str(port))
    while not (home / "taken").exists():
        time.sleep(0.02)
class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
http.server.HTTPServer((ip, port), Api).serve_forever()
"""


class _Squatter(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        return


def _two_free_ports() -> int:
    """A port P below the ephemeral range such that P and P+1 are both free now."""
    for low in range(21000, 32000, 7):
        if can_bind("0.0.0.0", low) and can_bind("0.0.0.0", low + 1):
            return low
    raise AssertionError("no two adjacent free ports")


async def test_a_port_answered_by_another_program_is_not_reported(
    callback_operator: Operator, alice_home: Path
) -> None:
    """Someone else's server takes the port between the launcher's check and the app's
    bind, and answers the readiness probe: the launcher must not report it as the app's."""
    low = _two_free_ports()
    async with running_bare(
        callback_operator,
        alice_home,
        WAITS_FOR_THIEF_APP,
        HPCHUB_STOP_GRACE="1",
        HPCHUB_PORT_MIN=str(low),
        HPCHUB_PORT_MAX=str(low + 1),
    ) as run:
        first = alice_home / "first-port"
        await eventually(first.exists, 30, "the app's first start")
        taken = int(first.read_text())
        squatter = HTTPServer(("0.0.0.0", taken), _Squatter)
        threading.Thread(target=squatter.serve_forever, daemon=True).start()
        try:
            (alice_home / "taken").touch()
            report = await next_report(callback_operator.reports[run.uid], run, 60)
        finally:
            squatter.shutdown()
            squatter.server_close()
        assert report.failure is None, run.log()
        assert report.port == ({low, low + 1} - {taken}).pop(), (report, taken, run.log())
        assert f"port {taken} was taken before jupyter-lab listened on it" in run.log()
