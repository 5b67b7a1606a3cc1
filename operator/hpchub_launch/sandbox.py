"""Network isolation, the side effects: probe the node, start bwrap, attach slirp4netns.

Order of a start: bwrap creates the namespaces and reports the sandboxed pid on its info fd,
then waits on its block fd; slirp4netns joins the sandbox's network namespace (through the
user namespace that owns it) and says it is ready; the one port forward is added through
its API socket, whose file is then removed (nothing else can add one); only then does the
launcher unblock bwrap, which starts the app. Any failure before that point stops both
helpers and raises LaunchError with their stderr, and the app has run no code.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .app import App, LaunchError, StderrTail
from .isolation import (
    NodeSupport,
    Tools,
    bwrap_argv,
    hostfwd_error,
    hostfwd_request,
    sandbox_pid,
    slirp_argv,
    userns_problem,
)

log = logging.getLogger("hpchub-launch")

# ioctl(2) on a namespace fd: the user namespace owning it (linux/nsfs.h, _IO(0xb7, 0x1)).
_NS_GET_USERNS = 0xB701
SETUP_TIMEOUT = 30.0
_FORWARD_ATTEMPTS = 5
_SUN_PATH_MAX = 100


def node_support(path: str | None) -> NodeSupport:
    """Look at this node: the two programs on ``path``, user namespaces, /dev/net/tun."""
    return NodeSupport(
        bwrap=shutil.which("bwrap", path=path),
        slirp4netns=shutil.which("slirp4netns", path=path),
        userns_problem=userns_problem(
            _read("/proc/sys/user/max_user_namespaces"),
            _read("/proc/sys/kernel/unprivileged_userns_clone"),
        ),
        tun_problem=_tun_problem(),
    )


def _read(path: str) -> str | None:
    """A small file's text, or None when it does not exist or cannot be read."""
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _tun_problem() -> str | None:
    """Why this user cannot open /dev/net/tun (slirp4netns creates its tap device there)."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/net/tun is not usable by this user: {exc.strerror}"
    os.close(fd)
    return None


class Network:
    """slirp4netns serving one sandbox: stops when :meth:`stop` closes its exit fd."""

    def __init__(self, proc: subprocess.Popen[bytes], exit_fd: int, api_dir: Path) -> None:
        """Own the running slirp4netns, the write end of its exit pipe, its API directory."""
        self.proc = proc
        self.api_dir = api_dir
        self._exit_fd: int | None = exit_fd
        assert proc.stderr is not None
        self._stderr = StderrTail(proc.stderr, "slirp4netns-stderr")

    def alive(self) -> bool:
        """True while slirp4netns runs."""
        return self.proc.poll() is None

    def stderr_tail(self) -> list[str]:
        """The last lines slirp4netns wrote."""
        return self._stderr.lines(0.5)

    def stop(self, grace: float = 2.0) -> None:
        """Ask slirp4netns to exit (close its exit fd), SIGKILL it after ``grace`` s."""
        shutil.rmtree(self.api_dir, ignore_errors=True)
        if self._exit_fd is not None:
            os.close(self._exit_fd)
            self._exit_fd = None
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_sandboxed(
    tools: Tools,
    command: list[str],
    env: Mapping[str, str],
    cwd: Path | None,
    host_addr: str,
    guest_port: int,
    pick_host_port: Callable[[], int],
) -> tuple[App, Network, int]:
    """Start ``command`` in the sandbox with ``host_addr:<port>`` forwarded to ``guest_port``.

    Returns the app (bwrap; its ``pgid`` is the sandboxed app's group), the network helper
    and the forwarded port (from ``pick_host_port``; another is tried if it was taken).
    """
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe()
    try:
        app = App(
            bwrap_argv(tools.bwrap, info_w, block_r, command), env, cwd, pass_fds=(info_w, block_r)
        )
    except LaunchError:
        os.close(info_r)
        os.close(block_w)
        raise
    finally:
        os.close(info_w)
        os.close(block_r)
    network: Network | None = None
    try:
        with open(info_r, "rb", buffering=0) as info:
            child = _read_sandbox_pid(info.fileno(), app)
        network = _attach(tools.slirp4netns, child)
        host_port = _forward(network, host_addr, guest_port, pick_host_port)
        os.write(block_w, b"1")
    except (LaunchError, OSError) as exc:
        _abort(app, network, block_w)
        lines = app.stderr_tail(1.0) + (network.stderr_tail() if network else [])
        if isinstance(exc, LaunchError):
            raise LaunchError(str(exc), lines) from None
        raise LaunchError(f"cannot set up the sandbox: {exc}", lines) from None
    os.close(block_w)
    app.pgid = child
    return app, network, host_port


def _read_sandbox_pid(fd: int, app: App) -> int:
    """The sandboxed pid bwrap writes on its info fd (LaunchError if bwrap fails first)."""
    deadline = time.monotonic() + SETUP_TIMEOUT
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        chunk = os.read(fd, 4096) if ready else None
        if chunk == b"":
            break
        if chunk:
            data += chunk
            try:
                pid = sandbox_pid(data)
            except ValueError as exc:
                raise LaunchError(str(exc)) from None
            if pid is not None:
                return pid
    code = app.wait(1.0)
    if code is not None:
        raise LaunchError(f"bwrap could not create the sandbox (exit status {code})")
    raise LaunchError(f"bwrap did not report its sandbox within {SETUP_TIMEOUT:.0f} s")


def _attach(slirp4netns: str, child: int) -> Network:
    """Start slirp4netns on the network namespace of ``child`` and wait until it is up."""
    netns = os.open(f"/proc/{child}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        userns = fcntl.ioctl(netns, _NS_GET_USERNS)
    except OSError:
        os.close(netns)
        raise
    ready_r, ready_w = os.pipe()
    exit_r, exit_w = os.pipe()
    api_dir = _private_dir()
    try:
        proc = subprocess.Popen(
            slirp_argv(slirp4netns, netns, userns, ready_w, exit_r, str(api_dir / "api.sock")),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(netns, userns, ready_w, exit_r),
            start_new_session=True,
        )
    except OSError:
        for fd in (ready_r, exit_w):
            os.close(fd)
        shutil.rmtree(api_dir, ignore_errors=True)
        raise
    finally:
        for fd in (netns, userns, ready_w, exit_r):
            os.close(fd)
    network = Network(proc, exit_w, api_dir)
    try:
        ready, _, _ = select.select([ready_r], [], [], SETUP_TIMEOUT)
        if not ready or os.read(ready_r, 1) != b"1":
            network.stop(0.5)
            raise LaunchError("slirp4netns could not connect the sandbox to the network")
    finally:
        os.close(ready_r)
    return network


def _private_dir() -> Path:
    """A new directory only this user can enter, short enough for a socket path."""
    base = tempfile.gettempdir()
    if len(base) > _SUN_PATH_MAX - 40:
        base = "/tmp"  # noqa: S108 (mkdtemp makes a new 0700 directory in it)
    return Path(tempfile.mkdtemp(prefix="hpchub-slirp-", dir=base))


def _forward(
    network: Network, host_addr: str, guest_port: int, pick_host_port: Callable[[], int]
) -> int:
    """Add the one port forward; retry with another port if the picked one was taken."""
    api_socket = network.api_dir / "api.sock"
    try:
        error: str | None = "no attempt"
        for _ in range(_FORWARD_ATTEMPTS):
            host_port = pick_host_port()
            error = _api_call(api_socket, hostfwd_request(host_addr, host_port, guest_port))
            if not error:
                return host_port
            log.warning("slirp4netns refused to forward port %d: %s", host_port, error)
        raise LaunchError(f"slirp4netns could not forward a port: {error}")
    finally:
        shutil.rmtree(network.api_dir, ignore_errors=True)


def _api_call(path: Path, request: bytes) -> str | None:
    """One request on the slirp4netns API socket: None on success, else the error."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(SETUP_TIMEOUT)
        sock.connect(str(path))
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return hostfwd_error(reply)


def _abort(app: App, network: Network | None, block_w: int) -> None:
    """Stop a sandbox that never released its app: kill bwrap, stop slirp4netns."""
    app.signal_group(signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.close(block_w)
    app.wait(5.0)
    if network is not None:
        network.stop(1.0)
