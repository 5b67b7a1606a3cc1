"""How the launcher picks the app's port and recognises a port taken under its feet."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hpchub_launch.app import (
    LaunchError,
    ephemeral_ports,
    listener_is_ours,
    listening_inodes,
    pick_port,
    port_clash,
    port_pool,
)


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


def test_pick_port_never_returns_a_port_in_use() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        with pytest.raises(LaunchError, match=f"no free port among 1 tried in {busy}-{busy}"):
            pick_port("127.0.0.1", busy, busy, avoid=range(0))


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


TCP_TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:5E8C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 00000000:5E8C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:5E8C 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 333 1
   3: 0100007F:5E8D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1
"""


def test_listening_inodes_reads_listeners_of_one_port(tmp_path: Path) -> None:
    (tmp_path / "tcp").write_text(TCP_TABLE)  # 0x5E8C = 24204; no tcp6 file: fine
    assert listening_inodes(24204, tmp_path) == {"socket:[111]", "socket:[222]"}
    assert listening_inodes(24205, tmp_path) == {"socket:[444]"}
    assert listening_inodes(24206, tmp_path) == set()
    assert listening_inodes(24204, tmp_path / "missing") is None


def test_a_listener_of_ours_is_recognised() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        assert listener_is_ours(held.getsockname()[1], os.getpgrp())


def test_a_listener_of_another_program_is_not_ours() -> None:
    """A listener held by a process that is neither our descendant nor in the group."""
    script = ("import socket, sys, time\n"
              "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
              "print(s.getsockname()[1], flush=True); time.sleep(60)\n")
    # sh starts python in the background and exits: python is re-parented away from us.
    proc = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "$0" &', script],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    proc.wait(10)
    try:
        assert not listener_is_ours(port, os.getpgrp())
    finally:
        for line in subprocess.run(["pgrep", "-f", "s.getsockname"], capture_output=True,
                                   text=True, check=False).stdout.split():
            os.kill(int(line), signal.SIGKILL)
