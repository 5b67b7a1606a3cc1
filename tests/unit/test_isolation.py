"""Network isolation's pure parts: what the node can do, the decision, the command lines."""

from __future__ import annotations

import json

import pytest

from hpchub_launch.config import ConfigError, read_config
from hpchub_launch.isolation import (
    Decision,
    NodeSupport,
    Tools,
    bwrap_argv,
    decide,
    hostfwd_error,
    hostfwd_request,
    inner_port,
    missing,
    sandbox_pid,
    slirp_argv,
    userns_problem,
)

from .test_launch_config import BASE

CAPABLE = NodeSupport(
    bwrap="/usr/bin/bwrap",
    slirp4netns="/usr/bin/slirp4netns",
    userns_problem=None,
    tun_problem=None,
)
NO_TUN = "/dev/net/tun is not usable by this user: Permission denied"


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "off"), ("off", "off"), ("required", "required")]
)
def test_isolation_setting(value: str | None, expected: str) -> None:
    env = BASE if value is None else {**BASE, "HPCHUB_ISOLATION": value}
    assert read_config(env).isolation == expected


def test_unknown_isolation_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="HPCHUB_ISOLATION must be one of off, required"):
        read_config({**BASE, "HPCHUB_ISOLATION": "yes"})


@pytest.mark.parametrize(
    ("max_userns", "unprivileged", "expected"),
    [
        ("15000\n", "1\n", None),
        (None, None, None),  # no sysctl files: no verdict, bwrap will tell
        ("15000\n", None, None),
        ("0\n", "1\n", "user namespaces are disabled (sysctl user.max_user_namespaces = 0)"),
        (
            "15000\n",
            "0\n",
            "unprivileged user namespaces are disabled "
            "(sysctl kernel.unprivileged_userns_clone = 0)",
        ),
    ],
)
def test_userns_problem(max_userns: str | None, unprivileged: str | None, expected: str) -> None:
    assert userns_problem(max_userns, unprivileged) == expected


@pytest.mark.parametrize(
    ("support", "bind_ip", "reason"),
    [
        (CAPABLE, "0.0.0.0", None),
        (CAPABLE, "10.1.2.3", None),
        (NodeSupport(None, None, None, None), "0.0.0.0", "bwrap (bubblewrap) is not on PATH"),
        (
            NodeSupport("/usr/bin/bwrap", None, None, None),
            "0.0.0.0",
            "slirp4netns is not on PATH",
        ),
        (
            NodeSupport("/b", "/s", "user namespaces are disabled (x)", NO_TUN),
            "0.0.0.0",
            "user namespaces are disabled (x)",
        ),
        (NodeSupport("/b", "/s", None, NO_TUN), "0.0.0.0", NO_TUN),
        (CAPABLE, "::", "the forwarded port is IPv4 only, and HPCHUB_BIND_IP is ::"),
    ],
)
def test_missing(support: NodeSupport, bind_ip: str, reason: str | None) -> None:
    assert missing(support, bind_ip) == reason


NO_SLIRP = NodeSupport("/usr/bin/bwrap", None, None, None)


@pytest.mark.parametrize(
    ("mode", "support", "expected"),
    [
        ("off", CAPABLE, Decision()),
        ("off", NO_SLIRP, Decision()),
        ("required", CAPABLE, Decision(tools=Tools("/usr/bin/bwrap", "/usr/bin/slirp4netns"))),
        ("optional", CAPABLE, Decision(tools=Tools("/usr/bin/bwrap", "/usr/bin/slirp4netns"))),
        (
            "required",
            NO_SLIRP,
            Decision(
                failure="network isolation is required but unavailable: slirp4netns is not on PATH"
            ),
        ),
    ],
)
def test_decide(mode: str, support: NodeSupport, expected: Decision) -> None:
    assert decide(mode, support, "0.0.0.0") == expected


def test_optional_without_support_runs_unisolated_with_a_warning() -> None:
    decision = decide("optional", NodeSupport("/b", "/s", None, NO_TUN), "0.0.0.0")
    assert decision.tools is None and decision.failure is None
    assert decision.warning is not None
    assert decision.warning.startswith(f"network isolation unavailable ({NO_TUN}); running")
    assert "other users on this node can reach the server" in decision.warning


def test_bwrap_argv() -> None:
    command = ["/env/bin/jupyter-lab", "--ip=0.0.0.0", "--port=30001"]
    assert bwrap_argv("/usr/bin/bwrap", 7, 8, command) == [
        "/usr/bin/bwrap",
        "--unshare-user",
        "--unshare-net",
        "--bind", "/", "/",
        "--dev-bind", "/dev", "/dev",
        "--bind", "/proc", "/proc",
        "--die-with-parent",
        "--new-session",
        "--info-fd", "7",
        "--block-fd", "8",
        "--",
        *command,
    ]  # fmt: skip


def test_bwrap_argv_keeps_a_hostile_command_literal() -> None:
    """The command comes after "--": an argument that looks like a bwrap option is inert."""
    argv = bwrap_argv("bwrap", 3, 4, ["--bind", "/etc", "$(reboot)"])
    assert argv[-4:] == ["--", "--bind", "/etc", "$(reboot)"]


def test_slirp_argv() -> None:
    assert slirp_argv("/usr/bin/slirp4netns", 5, 6, 9, 10, "/tmp/hpchub-slirp-x/api.sock") == [
        "/usr/bin/slirp4netns",
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--ready-fd=9",
        "--exit-fd=10",
        "--api-socket=/tmp/hpchub-slirp-x/api.sock",
        "--netns-type=path",
        "--userns-path=/proc/self/fd/6",
        "/proc/self/fd/5",
        "tap0",
    ]


@pytest.mark.parametrize(("bind_ip", "host_addr"), [("0.0.0.0", "0.0.0.0"), ("", "0.0.0.0")])
def test_hostfwd_request(bind_ip: str, host_addr: str) -> None:
    assert json.loads(hostfwd_request(bind_ip, 30001, 41234)) == {
        "execute": "add_hostfwd",
        "arguments": {
            "proto": "tcp",
            "host_addr": host_addr,
            "host_port": 30001,
            "guest_port": 41234,
        },
    }


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b'{"return":{"id":1}}', None),
        (b'{"error":{"desc":"bad request: add_hostfwd: failed to add"}}', "bad request: "
         "add_hostfwd: failed to add"),
        (b"", "unreadable answer from slirp4netns: b''"),
        (b"[1]", "unexpected answer from slirp4netns: b'[1]'"),
    ],
)  # fmt: skip
def test_hostfwd_error(reply: bytes, error: str | None) -> None:
    assert hostfwd_error(reply) == error


@pytest.mark.parametrize(
    ("info", "pid"),
    [
        (b"", None),
        (b'{\n    "child-pid": 42', None),  # still being written
        (b'{\n    "child-pid": 42,\n    "net-namespace": 4026532179\n}\n', 42),
    ],
)
def test_sandbox_pid(info: bytes, pid: int | None) -> None:
    assert sandbox_pid(info) == pid


@pytest.mark.parametrize("info", [b"{}", b'{"child-pid": "42"}', b'{"child-pid": 0}', b"[]"])
def test_sandbox_pid_refuses_nonsense(info: bytes) -> None:
    with pytest.raises(ValueError, match="no child pid"):
        sandbox_pid(info)


@pytest.mark.parametrize("pick", [0, 1, 2, 7, 2**31, 2**32 - 1])
@pytest.mark.parametrize("host_port", [20000, 20003, 20009])
def test_inner_port_is_in_range_and_not_the_forwarded_one(host_port: int, pick: int) -> None:
    port = inner_port(host_port, 20000, 20009, pick)
    assert 20000 <= port <= 20009 and port != host_port


def test_inner_port_of_a_one_port_range() -> None:
    assert inner_port(30000, 30000, 30000, 5) == 30001
    assert inner_port(65535, 65535, 65535, 5) == 65534
