"""Start the Jupyter application as a child in its own process group, and stop all of it.

The child's stderr goes through the launcher (a thread copies it to our stderr, so it stays
in the job's log) and its last lines are kept for a failure report. On Linux the launcher
makes itself a child subreaper, so processes that leave the app's process group (kernels
run in their own session) come back to it when the app dies and are stopped too.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO

from .config import LaunchConfig

log = logging.getLogger("hpchub-launch")

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
_STDERR_LINES = 20
_PORT_ATTEMPTS = 200
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_CLASH_PHRASES = ("already in use", "is not available", "eaddrinuse")
# Never handed to the app: the report is the launcher's business, not the user's code.
_PRIVATE_ENV = ("HPCHUB_CALLBACK_TOKEN",)


class LaunchError(RuntimeError):
    """The app could not be started at all (no executable, no port, bad directory)."""

    def __init__(self, reason: str, stderr_lines: list[str] | None = None) -> None:
        """``reason`` for the report, with the end of a helper's stderr if there is one."""
        super().__init__(reason)
        self.stderr_lines = stderr_lines or []


def find_executable(name: str) -> str:
    """``name`` next to the running Python first (its venv or conda env), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise LaunchError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def build_command(config: LaunchConfig, port: int, executable: str) -> list[str]:
    """The argv of the app (never a shell string); the token stays in the environment."""
    argv = [executable, f"--ip={config.bind_ip}", f"--port={port}", "--ServerApp.port_retries=0"]
    if config.hub_mode:
        return argv
    return [*argv, "--no-browser", f"--ServerApp.base_url={config.base_url}"]


def executable_name(config: LaunchConfig) -> str:
    """The program that serves ``config.app`` in hub or standalone mode."""
    if config.hub_mode:
        return "jupyterhub-singleuser"
    return "jupyter-lab" if config.app == "jupyterlab" else "jupyter-notebook"


def app_environment(config: LaunchConfig, env: Mapping[str, str], port: int) -> dict[str, str]:
    """The app's environment: ours minus the callback token; in hub mode, the service URL.

    jupyterhub-singleuser takes its ip and port from ``$JUPYTERHUB_SERVICE_URL`` (and
    refuses to start without it), so it must name the port picked here.
    """
    child = {k: v for k, v in env.items() if k not in _PRIVATE_ENV}
    if config.hub_mode:
        child["JUPYTERHUB_SERVICE_URL"] = service_url(
            env.get("JUPYTERHUB_SERVICE_URL", ""), config.bind_ip, port, config.base_url
        )
        if config.app == "notebook":
            child.setdefault("JUPYTERHUB_DEFAULT_URL", "/tree")
    return child


def service_url(given: str, bind_ip: str, port: int, base_url: str) -> str:
    """``given`` (or http://bind_ip{base_url}) with its host and port set to bind_ip:port."""
    parsed = urllib.parse.urlsplit(given or f"http://placeholder{base_url}")
    host = f"[{bind_ip}]" if ":" in bind_ip else bind_ip
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"{host}:{port}"))


def pick_port(bind_ip: str, low: int, high: int, avoid: range | None = None) -> int:
    """A port in [low, high] that we can bind right now, tried in random order.

    Ports of ``avoid`` (the kernel's range for outgoing connections, by default) are left
    out when the range has others: any connection made on the node may take one of them
    between our check and the app's bind.
    """
    parts = port_pool(low, high, ephemeral_ports() if avoid is None else avoid)
    total = sum(len(part) for part in parts)
    for index in random.SystemRandom().sample(range(total), min(total, _PORT_ATTEMPTS)):
        port = _nth(parts, index)
        if can_bind(bind_ip, port):
            return port
    raise LaunchError(f"no free port among {min(total, _PORT_ATTEMPTS)} tried in {low}-{high}")


def ephemeral_ports(path: Path = _EPHEMERAL_RANGE) -> range:
    """The local ports the kernel hands to outgoing connections (empty if unreadable)."""
    try:
        low, high = (int(field) for field in path.read_text().split())
    except (OSError, ValueError):
        return range(0)
    return range(low, high + 1)


def port_pool(low: int, high: int, avoid: range) -> list[range]:
    """The ports of [low, high] outside ``avoid``; all of them if none is outside."""
    outside = [
        part
        for part in (range(low, min(high + 1, avoid.start)), range(max(low, avoid.stop), high + 1))
        if len(part)
    ]
    return outside if avoid and outside else [range(low, high + 1)]


def _nth(parts: list[range], index: int) -> int:
    """The ``index``-th port of the concatenation of ``parts``."""
    for part in parts:
        if index < len(part):
            return part[index]
        index -= len(part)
    raise IndexError(index)


def listener_is_ours(port: int, pgid: int, proc: Path = Path("/proc")) -> bool:
    """False when /proc shows that the TCP socket listening on ``port`` belongs to no
    process of ours (the app's group and our descendants); True when it does or when /proc
    cannot tell. Another program may bind a port between our check and the app's bind,
    and would then answer the readiness probe in the app's place."""
    inodes = listening_inodes(port, proc / "net")
    if inodes is None:
        return True
    for pid in _leftovers(pgid):
        with contextlib.suppress(OSError):
            for fd in os.scandir(proc / str(pid) / "fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in inodes:
                        return True
    return False


def listening_inodes(port: int, proc_net: Path) -> set[str] | None:
    """``socket:[inode]`` of every TCP socket (IPv4 and IPv6) listening on ``port``, from
    ``/proc/net/tcp{,6}``; None when neither file can be read."""
    found: set[str] = set()
    readable = False
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ... inode: st 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A":
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port:
                    found.add(f"socket:[{fields[9]}]")
    return found if readable else None


def port_clash(port: int, stderr_lines: Iterable[str]) -> bool:
    """True when the app's last words say ``port`` was taken (jupyter-server's wording, the
    errno text of Python and C programs), e.g. by a process that bound it after our check."""
    for line in stderr_lines:
        lower = line.lower()
        if any(phrase in lower for phrase in _CLASH_PHRASES) and (
            str(port) in line or "errno 98" in lower
        ):
            return True
    return False


def can_bind(bind_ip: str, port: int) -> bool:
    """True when a listening socket could take ``bind_ip:port`` (as the app will)."""
    family = socket.AF_INET6 if ":" in bind_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind_ip, port))
        except OSError:
            return False
    return True


def _die_with_launcher() -> Callable[[], None] | None:
    """A pre-exec hook asking the kernel to SIGTERM the app when the launcher dies (Linux).

    The app leads its own process group, so a SIGKILL of the launcher's group (an admin, the
    OOM killer, a login-node wrapper killed) would leave it running, forgotten. SIGTERM lets
    jupyter-server stop its kernels. libc is resolved here, before the fork: the hook only
    makes two system calls.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    launcher = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != launcher:  # the launcher died before the prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux only; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("could not become a child subreaper (errno %d)", ctypes.get_errno())


class StderrTail:
    """Copies a child's stderr to ours line by line (a thread), keeping the last lines."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        """Start copying ``stream`` until its end."""
        self._tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._copier = threading.Thread(target=self._copy, args=(stream,), name=name, daemon=True)
        self._copier.start()

    def _copy(self, stream: IO[bytes]) -> None:
        """Copy until end of file (the child and every holder of the pipe are gone)."""
        out = sys.stderr.buffer
        for line in iter(stream.readline, b""):
            with contextlib.suppress(OSError, ValueError):
                out.write(line)
                out.flush()
            self._tail.append(line.decode("utf-8", "replace").rstrip())

    def lines(self, wait: float = 2.0) -> list[str]:
        """The last non-blank lines (waiting up to ``wait`` s for the pipe to drain)."""
        self._copier.join(wait)
        return [line for line in list(self._tail) if line.strip()]


class App:
    """The running app: its process, process group and the tail of its stderr."""

    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: Path | None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        """Start ``argv`` in a new session (its own process group); raise LaunchError.

        ``pgid`` is the group stop signals go to: the process's own, unless a sandbox
        moves it (the sandboxed app leads a session of its own inside bwrap).
        """
        try:
            self.proc = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=pass_fds,
                preexec_fn=_die_with_launcher(),
            )
        except OSError as exc:
            raise LaunchError(_start_error(argv[0], cwd, exc)) from None
        self.pgid = self.proc.pid
        assert self.proc.stderr is not None
        self._stderr = StderrTail(self.proc.stderr, "app-stderr")

    def stderr_tail(self, wait: float = 2.0) -> list[str]:
        """The last lines the app wrote to stderr (waiting briefly for the pipe to drain)."""
        return self._stderr.lines(wait)

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the app's whole process group, or its leader if there is no group
        yet (a sandboxed app before its session starts); gone is fine."""
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pgid, sig)
        except PermissionError:
            pass

    def wait(self, timeout: float) -> int | None:
        """The app's return code, or None if it is still running after ``timeout`` s."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def _start_error(program: str, cwd: Path | None, exc: OSError) -> str:
    """Why Popen failed, naming the working directory when chdir was the problem."""
    where = "working directory" if cwd is not None and str(exc.filename) == str(cwd) else "program"
    return f"cannot start {Path(program).name}: {where} {exc.filename}: {exc.strerror}"


def exit_status(returncode: int) -> int:
    """A shell-style exit status: 128 + signal number for a killed process."""
    return 128 - returncode if returncode < 0 else returncode


def stop_leftovers(pgid: int, grace: float) -> None:
    """Stop what survives the app: its process group and our adopted descendants.

    SIGTERM first, SIGKILL after ``grace`` seconds, then reap what we adopted.
    """
    targets = _leftovers(pgid)
    if not targets:
        return
    log.info("stopping %d leftover process(es) of the app", len(targets))
    _signal_all(targets, pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _leftovers(pgid) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.1)
    _signal_all(_leftovers(pgid), pgid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while _leftovers(pgid) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    _reap()


def _signal_all(pids: Iterable[int], pgid: int, sig: signal.Signals) -> None:
    """Signal the process group and each pid, ignoring those already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _leftovers(pgid: int) -> set[int]:
    """Live (non-zombie) descendants of this process plus members of ``pgid``."""
    table = _process_table()
    found = {pid for pid, (_, group, state) in table.items() if group == pgid and state != "Z"}
    frontier = [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, state) in table.items():
            if ppid == parent and pid not in found:
                frontier.append(pid)
                if state != "Z":
                    found.add(pid)
    if not table:  # no /proc: at least tell whether the group still exists
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, 0)
            found.add(pgid)
    return found


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) from /proc, or {} where there is no /proc."""
    table: dict[int, tuple[int, int, str]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _read_stat(entry.path)
                if stat is not None:
                    table[int(entry.name)] = stat
    return table


def _read_stat(path: str) -> tuple[int, int, str] | None:
    """(ppid, pgid, state) of one /proc/<pid>, or None if it vanished."""
    try:
        with open(f"{path}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]), int(fields[2]), fields[0]


def _reap() -> None:
    """Collect the exit status of adopted children so they do not stay zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            return
        if pid == 0:
            return
