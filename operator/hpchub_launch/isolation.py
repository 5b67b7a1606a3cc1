"""Network isolation, the pure part: can this node do it, what to do, and the command lines.

The app runs inside ``bwrap --unshare-user --unshare-net`` (the whole filesystem, /dev and
/proc bound as the user sees them: only the network namespace is private) and slirp4netns
connects that namespace to the node, forwarding exactly one port: ``bind_ip:host_port`` on
the node to the app's port inside. Whatever else listens inside the sandbox (the app's
proxied apps, kernels' ports) is reachable from inside only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

# The address slirp4netns gives the sandbox (its default "recommended IP"); the app listens
# on every address inside, i.e. this one and the sandbox's own loopback.
SANDBOX_BIND_IP = "0.0.0.0"
TAP_DEVICE = "tap0"
# slirp4netns' largest MTU: fewer, bigger packets through the user-mode stack.
SLIRP_MTU = 65520


@dataclass(frozen=True)
class NodeSupport:
    """What the node offers for isolation, as observed (probes are in sandbox.py)."""

    bwrap: str | None
    """Path of bwrap on PATH, or None."""
    slirp4netns: str | None
    """Path of slirp4netns on PATH, or None."""
    userns_problem: str | None
    """Why unprivileged user namespaces are unavailable, or None when they look enabled."""
    tun_problem: str | None
    """Why /dev/net/tun cannot be opened by this user, or None."""


@dataclass(frozen=True)
class Tools:
    """The programs an isolated launch runs."""

    bwrap: str
    slirp4netns: str


@dataclass(frozen=True)
class Decision:
    """How to launch: isolated with ``tools``, unisolated (``warning`` says why), or not."""

    tools: Tools | None = None
    warning: str | None = None
    failure: str | None = None


def userns_problem(max_user_namespaces: str | None, unprivileged_clone: str | None) -> str | None:
    """Why user namespaces are off, from two sysctls (None: absent file, no verdict)."""
    if max_user_namespaces is not None and max_user_namespaces.strip() == "0":
        return "user namespaces are disabled (sysctl user.max_user_namespaces = 0)"
    if unprivileged_clone is not None and unprivileged_clone.strip() == "0":
        return (
            "unprivileged user namespaces are disabled "
            "(sysctl kernel.unprivileged_userns_clone = 0)"
        )
    return None


def missing(support: NodeSupport, bind_ip: str) -> str | None:
    """The first reason this node (or bind address) cannot isolate, or None."""
    if support.bwrap is None:
        return "bwrap (bubblewrap) is not on PATH"
    if support.slirp4netns is None:
        return "slirp4netns is not on PATH"
    if support.userns_problem is not None:
        return support.userns_problem
    if support.tun_problem is not None:
        return support.tun_problem
    if ":" in bind_ip:
        return f"the forwarded port is IPv4 only, and HPCHUB_BIND_IP is {bind_ip}"
    return None


def decide(mode: str, support: NodeSupport, bind_ip: str) -> Decision:
    """Isolate, run unisolated, or refuse, for HPCHUB_ISOLATION ``mode``."""
    if mode == "off":
        return Decision()
    reason = missing(support, bind_ip)
    if reason is None:
        assert support.bwrap is not None and support.slirp4netns is not None
        return Decision(tools=Tools(support.bwrap, support.slirp4netns))
    if mode == "required":
        return Decision(failure=f"network isolation is required but unavailable: {reason}")
    return Decision(warning=unisolated_warning(reason))


def unisolated_warning(reason: str) -> str:
    """The log line of an optional isolation that could not be had."""
    return (
        f"network isolation unavailable ({reason}); running unisolated because the "
        "cluster's isolation is optional: other users on this node can reach the server"
    )


def bwrap_argv(bwrap: str, info_fd: int, block_fd: int, command: Sequence[str]) -> list[str]:
    """bwrap running ``command`` in a private network namespace, all else as on the node.

    ``--unshare-user`` even where bwrap is setuid, so that the network namespace belongs to
    a user namespace of ours and slirp4netns may configure it. The app runs in a session
    of its own (its process group is what the launcher signals; bwrap outlives it and
    exits with its status), is killed if the launcher dies, and only starts once something
    is written to ``block_fd`` (after the network is up). bwrap writes the sandboxed
    process's pid to ``info_fd``.
    """
    return [
        bwrap,
        "--unshare-user",
        "--unshare-net",
        "--bind", "/", "/",
        "--dev-bind", "/dev", "/dev",
        "--bind", "/proc", "/proc",
        "--die-with-parent",
        "--new-session",
        "--info-fd", str(info_fd),
        "--block-fd", str(block_fd),
        "--",
        *command,
    ]  # fmt: skip


def slirp_argv(
    slirp4netns: str, netns_fd: int, userns_fd: int, ready_fd: int, exit_fd: int, api_socket: str
) -> list[str]:
    """slirp4netns attached to the namespaces open as ``netns_fd`` and ``userns_fd``.

    ``userns_fd`` must be the user namespace that owns the network namespace (bwrap may nest
    a second one for the app). The sandbox cannot reach the node's loopback; port
    forwards are added through ``api_socket``; slirp4netns writes to ``ready_fd`` once the
    interface is up and exits when ``exit_fd`` is closed (also when the launcher dies).
    """
    return [
        slirp4netns,
        "--configure",
        f"--mtu={SLIRP_MTU}",
        "--disable-host-loopback",
        f"--ready-fd={ready_fd}",
        f"--exit-fd={exit_fd}",
        f"--api-socket={api_socket}",
        "--netns-type=path",
        f"--userns-path=/proc/self/fd/{userns_fd}",
        f"/proc/self/fd/{netns_fd}",
        TAP_DEVICE,
    ]


def hostfwd_request(host_addr: str, host_port: int, guest_port: int) -> bytes:
    """The slirp4netns API request forwarding TCP ``host_addr:host_port`` to ``guest_port``."""
    request = {
        "execute": "add_hostfwd",
        "arguments": {
            "proto": "tcp",
            "host_addr": host_addr or "0.0.0.0",
            "host_port": host_port,
            "guest_port": guest_port,
        },
    }
    return json.dumps(request).encode()


def hostfwd_error(reply: bytes) -> str | None:
    """None when slirp4netns accepted the forward, else its error (or what was wrong)."""
    try:
        answer = json.loads(reply)
    except ValueError:
        return f"unreadable answer from slirp4netns: {reply[:200]!r}"
    if isinstance(answer, dict) and isinstance(answer.get("return"), dict):
        return None
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return str(answer["error"].get("desc", answer["error"]))
    return f"unexpected answer from slirp4netns: {reply[:200]!r}"


def sandbox_pid(info: bytes) -> int | None:
    """The sandboxed process's pid from bwrap's --info-fd JSON; None while incomplete."""
    try:
        parsed = json.loads(info)
    except ValueError:
        return None
    pid = parsed.get("child-pid") if isinstance(parsed, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError(f"bwrap's info has no child pid: {info[:200]!r}")
    return pid


def inner_port(host_port: int, low: int, high: int, pick: int) -> int:
    """The app's port inside the sandbox: a port of [low, high] other than ``host_port``.

    Any port is free in a fresh namespace; using another number than the forwarded one
    keeps the two apart in logs and tests. ``pick`` is a random integer.
    """
    size = high - low + 1
    if size < 2:
        return low + 1 if host_port < 65535 else low - 1
    port = low + pick % (size - 1)
    return port + 1 if port >= host_port else port
