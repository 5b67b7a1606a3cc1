"""Start, health-check and stop one local service process.

A :class:`ManagedProcess` runs one daemon in the foreground (never let it fork away), sends its
output to a log file, polls a readiness probe until it passes, and stops the whole process
group by escalating SIGTERM -> SIGKILL. Every service of the stack is built from these.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Probe = Callable[[], bool]


class ServiceError(RuntimeError):
    """A service could not start or is not healthy; the message carries its log tail."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when a GET on url answers 200."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return int(resp.status) == 200


def fresh_dir(path: Path, mode: int = 0o777) -> None:
    """Make ``path`` (and its parents) anew and empty, removing what was there."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=mode, parents=True)


def log_tail(path: Path, lines: int = 60) -> str:
    """The last lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(probe: Probe, timeout: float, interval: float = 0.1, what: str = "") -> None:
    """Poll ``probe`` until it returns True; raise TimeoutError after ``timeout`` seconds.

    The interval grows gently (x1.5, capped at 1 s) so fast services are seen fast and slow
    ones are not hammered.
    """
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        with contextlib.suppress(Exception):
            if probe():
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or 'probe'}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


@dataclass
class ManagedProcess:
    """One foreground daemon with a log file and a readiness probe."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    ready: Probe | None = None
    ready_timeout: float = 60.0
    user: str | None = None
    """Run as this Unix user (requires root); None keeps the current user."""
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Start the process and block until its probe passes (or raise ServiceError)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if self.env is None else self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                user=self.user,
                start_new_session=True,
            )
        if self.ready is None:
            return
        proc = self.proc

        def probe() -> bool:
            if proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {proc.returncode} during start-up\n"
                    f"--- {self.log_path} ---\n{log_tail(self.log_path)}"
                )
            return bool(self.ready and self.ready())

        try:
            self._wait(probe)
        except ServiceError:
            self.stop()
            raise
        except TimeoutError as exc:
            self.stop()
            raise ServiceError(
                f"{self.name}: {exc}\n--- {self.log_path} ---\n{log_tail(self.log_path)}"
            ) from exc

    def _wait(self, probe: Probe) -> None:
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.05
        while True:
            try:
                if probe():
                    return
            except ServiceError:
                raise
            except Exception:  # noqa: S110 - a probe that raises is simply not ready yet
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {self.ready_timeout:.0f}s waiting for ready")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Children that left the group's leader behind still share its process group id.
        _signal_group(proc.pid, signal.SIGKILL)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the process group at once (fault injection)."""
        if self.proc is not None:
            _signal_group(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self.proc = None

    def log(self, lines: int = 60) -> str:
        """The tail of this process's log, for test failure output."""
        return log_tail(self.log_path, lines)


def stop_strays(*environ_entries: str, grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process whose environment holds all ``environ_entries``
    (``NAME=value``): children a daemon started in sessions of their own, which outlive it
    when it is killed (JupyterHub's managed services). Returns the pids found."""
    wanted = [e.encode() for e in environ_entries]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if all(w in env for w in wanted):
            found.append(int(entry.name))
    _signal_pids(found, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not any(_alive(pid) for pid in found), grace, what="strays")
    _signal_pids(found, signal.SIGKILL)
    return found


def _signal_pids(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run(argv: Sequence[str], *, check: bool = True, env: Mapping[str, str] | None = None,
        input: bytes | None = None, timeout: float = 60.0, user: str | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    """Run a short command, capture its output; on failure raise with stderr in the message."""
    res = subprocess.run(
        list(argv), input=input, capture_output=True, env=None if env is None else dict(env),
        timeout=timeout, user=user, check=False,
    )
    if check and res.returncode != 0:
        raise ServiceError(
            f"{' '.join(argv)} failed ({res.returncode}): "
            f"{res.stderr.decode(errors='replace').strip()}"
        )
    return res
