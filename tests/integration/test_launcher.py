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
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from hpchub_operator.callback import PortBounds, Report, make_app, server_token, start
from hpchub_stack.process import free_port

USER = "alice"
SECRET = secrets.token_bytes(32)
LAUNCHER = Path(sys.executable).parent / "hpchub-launch"
OPERATOR_SRC = Path(__file__).resolve().parents[2] / "operator"
REPORT_TIMEOUT = 120.0


@dataclass
class Operator:
    """The callback side: the URL launchers report to and what they reported."""

    url: str
    servers: set[str] = field(default_factory=set)
    reports: dict[str, asyncio.Queue[Report]] = field(default_factory=dict)

    def expect(self, uid: str) -> asyncio.Queue[Report]:
        """Make ``uid`` a known server and return the queue its reports arrive on."""
        self.servers.add(uid)
        return self.reports.setdefault(uid, asyncio.Queue())


@pytest.fixture
async def operator() -> AsyncIterator[Operator]:
    port = free_port()
    op = Operator(url=f"http://127.0.0.1:{port}")

    async def on_report(uid: str, report: Report) -> None:
        await op.reports[uid].put(report)

    app = make_app(
        SECRET,
        lambda uid: PortBounds() if uid in op.servers else None,
        on_report,
        registry=CollectorRegistry(),
    )
    runner: web.AppRunner = await start(app, "127.0.0.1", port)
    yield op
    await runner.cleanup()


@pytest.fixture
def alice_home() -> Iterator[Path]:
    """A fresh, private home directory for alice (pytest's tmp_path is root-only)."""
    home = Path(tempfile.mkdtemp(prefix="hpchub-launch-"))
    shutil.chown(home, USER)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@dataclass
class Launch:
    """One launcher process run as alice, its log, and the marker its descendants inherit."""

    uid: str
    proc: asyncio.subprocess.Process
    log_path: Path
    marker: str
    jupyter_token: str

    def log(self) -> str:
        """The launcher's stderr (with the app's), for assertion messages."""
        return self.log_path.read_text(errors="replace")[-6000:]

    def processes(self) -> list[int]:
        """Every live process started by this launch (they all inherit the marker)."""
        return [pid for pid in _pids() if _has_marker(pid, self.marker)]


async def launch(operator: Operator, home: Path, argv: list[str], **extra: str) -> Launch:
    """Start the launcher (``argv``) as alice with the job's environment plus ``extra``."""
    uid = str(uuid.uuid4())
    operator.expect(uid)
    marker = uuid.uuid4().hex
    token = secrets.token_hex(24)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "USER": USER,
        "LANG": "C.UTF-8",
        "HPCHUB_SERVER_UID": uid,
        "HPCHUB_CALLBACK_URL": operator.url,
        "HPCHUB_CALLBACK_TOKEN": server_token(SECRET, uid),
        "JUPYTER_TOKEN": token,
        "HPCHUB_WORKDIR": str(home),
        "HPCHUB_TEST_MARKER": marker,
        **extra,
    }
    log_path = home.parent / f"{home.name}.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            user=USER,
            cwd=home,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    return Launch(uid, proc, log_path, marker, token)


@contextlib.asynccontextmanager
async def running(
    operator: Operator, home: Path, argv: list[str] | None = None, **extra: str
) -> AsyncIterator[Launch]:
    """A launch that is killed (with all it started) whatever the test does."""
    run = await launch(operator, home, argv or [str(LAUNCHER)], **extra)
    try:
        yield run
    finally:
        for pid in [run.proc.pid, *run.processes()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(run.proc.wait(), 10)
        run.log_path.unlink(missing_ok=True)


def _pids() -> list[int]:
    """All pids in /proc."""
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def _has_marker(pid: int, marker: str) -> bool:
    """True when a live (non-zombie) process carries HPCHUB_TEST_MARKER=marker."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and f"HPCHUB_TEST_MARKER={marker}".encode() in environ.split(b"\0")


def _owner(pid: int) -> int:
    """The uid a process runs as."""
    return Path(f"/proc/{pid}").stat().st_uid


def _environ(pid: int) -> bytes:
    """The raw environment of a process."""
    return Path(f"/proc/{pid}/environ").read_bytes()


def _cmdline(pid: int) -> list[str]:
    """argv of a process ([] once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


async def eventually(probe: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``probe`` until it is true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def http(method: str, url: str, token: str | None = None) -> int:
    """The HTTP status of one request (blocking; run it in a thread)."""
    request = urllib.request.Request(
        url,
        method=method,
        data=b"{}" if method == "POST" else None,
        headers={"Authorization": f"token {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def next_report(queue: asyncio.Queue[Report], run: Launch, within: float) -> Report:
    """The next report of a launch, failing with the launcher's log if none comes."""
    try:
        return await asyncio.wait_for(queue.get(), within)
    except TimeoutError:
        raise AssertionError(f"no report within {within:.0f} s; log:\n{run.log()}") from None


# ------------------------------------------------------------------------------ tests


async def test_jupyterlab_reports_its_port_and_stops_on_sigterm(
    operator: Operator, alice_home: Path
) -> None:
    async with running(operator, alice_home) as run:
        report = await next_report(operator.reports[run.uid], run, REPORT_TIMEOUT)
        assert report.failure is None, report.failure
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
            if p != run.proc.pid and "jupyter-lab" in " ".join(_cmdline(p))
        )
        assert _owner(app_pid) == pwd.getpwnam(USER).pw_uid
        assert b"HPCHUB_CALLBACK_TOKEN" not in _environ(app_pid)
        assert run.jupyter_token not in " ".join(_cmdline(app_pid))
        assert os.getpgid(app_pid) == app_pid != os.getpgid(run.proc.pid)

        # A kernel runs in a session of its own: it must be stopped too.
        assert (
            await asyncio.to_thread(http, "POST", f"{base}/api/kernels", run.jupyter_token) == 201
        )
        await eventually(
            lambda: any("ipykernel_launcher" in " ".join(_cmdline(p)) for p in run.processes()),
            60,
            "the kernel process",
        )

        run.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(run.proc.wait(), 30)
        assert code == 0, run.log()
        await eventually(lambda: not run.processes(), 10, "every launched process to exit")
        assert "HPCHUB_CALLBACK_TOKEN" not in run.log() and SECRET.hex() not in run.log()
        assert server_token(SECRET, run.uid) not in run.log()


async def test_missing_working_directory_is_reported_at_once(
    operator: Operator, alice_home: Path
) -> None:
    missing = alice_home / "no-such-project"
    started = time.monotonic()
    async with running(operator, alice_home, HPCHUB_WORKDIR=str(missing)) as run:
        report = await next_report(operator.reports[run.uid], run, 30)
        code = await asyncio.wait_for(run.proc.wait(), 30)
    assert time.monotonic() - started < 15
    assert report.port is None
    assert report.failure == (
        f"cannot start jupyter-lab: working directory {missing}: No such file or directory"
    )
    assert code == 4


async def test_app_crash_is_reported_with_the_end_of_its_stderr(
    operator: Operator, alice_home: Path
) -> None:
    """A site configuration that makes jupyter-server refuse to start."""
    config_dir = alice_home / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"root_dir": "/nonexistent/notebooks"}})
    )
    async with running(operator, alice_home, JUPYTER_CONFIG_DIR=str(config_dir)) as run:
        report = await next_report(operator.reports[run.uid], run, 60)
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


def _bare_env_with_stubborn_app(home: Path) -> Path:
    """A bin/ with a symlink to the system Python and the stubborn jupyter-lab beside it."""
    bindir = home / "env" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python3").symlink_to("/usr/bin/python3")
    app = bindir / "jupyter-lab"
    app.write_text("#!/usr/bin/python3\n" + STUBBORN_APP)
    app.chmod(0o755)
    return bindir / "python3"


async def test_stubborn_app_and_its_escaped_children_are_killed(
    operator: Operator, alice_home: Path
) -> None:
    """Also proves the launcher needs nothing but the standard library: it runs from a
    bare /usr/bin/python3 with only its own source on PYTHONPATH."""
    python = _bare_env_with_stubborn_app(alice_home)
    async with running(
        operator,
        alice_home,
        [str(python), "-m", "hpchub_launch"],
        HPCHUB_STOP_GRACE="1",
        PYTHONPATH=str(OPERATOR_SRC),
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",
    ) as run:
        report = await next_report(operator.reports[run.uid], run, 60)
        assert report.port is not None, report.failure
        await eventually(
            lambda: any(_cmdline(p)[:1] == ["sleep"] for p in run.processes()),
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
