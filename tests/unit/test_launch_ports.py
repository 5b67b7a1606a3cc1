"""How the launcher picks the app's port and recognises a port taken under its feet."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hpchub_launch.app import ephemeral_ports, pick_port, port_clash, port_pool


@pytest.mark.parametrize(
    ("low", "high", "avoid", "expected"),
    [
        # The default range against Linux's default ephemeral range: only the part below.
        (20000, 60000, range(32768, 61000), [range(20000, 32768)]),
        # A range straddling both ends keeps both outer parts.
        (1024, 65535, range(32768, 61000), [range(1024, 32768), range(61000, 65536)]),
        # Wholly outside: untouched.
        (20000, 30000, range(32768, 61000), [range(20000, 30001)]),
        # Wholly inside: nothing else is left, so the whole range is used.
        (40000, 40010, range(32768, 61000), [range(40000, 40011)]),
        # The kernel's range could not be read.
        (20000, 20010, range(0), [range(20000, 20011)]),
    ],
)
def test_port_pool(low: int, high: int, avoid: range, expected: list[range]) -> None:
    assert port_pool(low, high, avoid) == expected


def test_pick_port_stays_out_of_the_avoided_ports() -> None:
    picked = {pick_port("127.0.0.1", 20000, 20100, avoid=range(20010, 20101)) for _ in range(50)}
    assert picked and all(20000 <= port < 20010 for port in picked)


def test_pick_port_skips_a_port_in_use() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        neighbour = busy + 1 if busy < 65535 else busy - 1
        low, high = sorted((busy, neighbour))
        for _ in range(20):
            assert pick_port("127.0.0.1", low, high, avoid=range(0)) == neighbour


def test_ephemeral_ports_from_proc(tmp_path: Path) -> None:
    proc = tmp_path / "ip_local_port_range"
    proc.write_text("32768\t60999\n")
    assert ephemeral_ports(proc) == range(32768, 61000)
    assert ephemeral_ports(tmp_path / "missing") == range(0)
    proc.write_text("garbage\n")
    assert ephemeral_ports(proc) == range(0)


@pytest.mark.parametrize(
    ("lines", "clash"),
    [
        # jupyter-server with port_retries=0 (what CI once saw).
        (["[I ServerApp] The port 34384 is already in use.",
          "[C ServerApp] ERROR: the Jupyter server could not be started because port 34384 "
          "is not available."], True),
        # A Python program's own bind error.
        (["OSError: [Errno 98] Address already in use"], True),
        (["bind: EADDRINUSE on 0.0.0.0:34384"], True),
        # Another port, or another failure, is not a clash on ours.
        (["The port 8888 is already in use."], False),
        (["PermissionError: [Errno 13] Permission denied: '/nonexistent/notebooks'"], False),
        ([], False),
    ],
)
def test_port_clash(lines: list[str], clash: bool) -> None:
    assert port_clash(34384, lines) is clash
