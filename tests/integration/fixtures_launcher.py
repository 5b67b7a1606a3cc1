"""Running the real ``hpchub-launch`` as user alice against a real callback server.

Fixtures (a callback server standing in for the operator, a home directory for alice) and
the helpers the launcher tests share: start a launch, find every process it started (they
all inherit a marker variable), poll, make HTTP requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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
    """Port and failure reports, in order."""
    started: set[str] = field(default_factory=set)
    """Servers whose launcher sent the job-started hint."""

    def expect(self, uid: str) -> asyncio.Queue[Report]:
        """Make ``uid`` a known server and return the queue its reports arrive on."""
        self.servers.add(uid)
        return self.reports.setdefault(uid, asyncio.Queue())


@pytest.fixture
async def callback_operator() -> AsyncIterator[Operator]:
    port = free_port()
    op = Operator(url=f"http://127.0.0.1:{port}")

    async def on_report(uid: str, report: Report) -> None:
        if report.kind == "started":
            op.started.add(uid)
        else:
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
        return [pid for pid in all_pids() if has_marker(pid, self.marker)]


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


def all_pids() -> list[int]:
    """All pids in /proc."""
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def has_marker(pid: int, marker: str) -> bool:
    """True when a live (non-zombie) process carries HPCHUB_TEST_MARKER=marker."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and f"HPCHUB_TEST_MARKER={marker}".encode() in environ.split(b"\0")


def owner(pid: int) -> int:
    """The uid a process runs as."""
    return Path(f"/proc/{pid}").stat().st_uid


def environ_of(pid: int) -> bytes:
    """The raw environment of a process."""
    return Path(f"/proc/{pid}/environ").read_bytes()


def cmdline(pid: int) -> list[str]:
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
