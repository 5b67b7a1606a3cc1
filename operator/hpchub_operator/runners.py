"""Run a command as an HPC user: over SSH with a one-shot certificate, or through sudo.

Both runners take an argv list, never a shell string. Over SSH the remote side needs one
command line: it is ``shlex.join`` of the validated argv, so the user's login shell sees
every item as one literal word. Through sudo no shell is involved at all.

What each needs on the HPC side is in ``docs/acting-as-the-user.md``:

* :class:`SshRunner`: sshd with ``TrustedUserCAKeys`` naming the CA whose private key the
  operator holds (a Kubernetes Secret). For every operation the runner makes a fresh
  ed25519 key pair in memory, signs a certificate for exactly one principal (the HPC login)
  valid for at most five minutes, without agent, port or X11 forwarding, pty or user rc,
  and verifies the node's host key against the HPCCluster's ``knownHosts`` (never "accept
  any"). The key and certificate are dropped when the operation ends.
* :class:`SudoRunner`: for an operator that runs on the login node itself; it needs one
  sudoers line (``hpchub ALL=(%hpcusers,!root) NOPASSWD: ALL``) and runs
  ``sudo -n -u <user> -- argv...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncssh

from hpchub_api import patterns

MAX_CERT_SECONDS = 300
"""The longest validity a one-shot certificate may have (five minutes)."""
CLOCK_SKEW_SECONDS = 30
"""Certificates start this long in the past, against clock skew (counted in the validity)."""


@dataclass(frozen=True)
class CommandResult:
    """What a command left behind: its exit status and its output."""

    exit_status: int
    """The exit code; 128 + N when a signal N ended it; 255 when it is unknown."""
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def error_text(self) -> str:
        return " ".join(self.stderr.decode(errors="replace").split())


class RunnerError(Exception):
    """The command could not be run (connection, authentication, timeout): outcome unknown."""


class HostKeyMismatch(RunnerError):
    """The node's host key is not the one the HPCCluster lists: the runner refused to log in."""


class CommandRunner(Protocol):
    """Run argv as an HPC user on one host."""

    async def run(self, user: str, argv: Sequence[str], *, stdin: bytes | None = None,
                  max_seconds: float = 60.0) -> CommandResult:
        """Run ``argv`` as ``user`` with ``stdin`` (giving up after ``max_seconds``); raise
        RunnerError if it could not run."""

    async def close(self) -> None:
        """Release what the runner holds."""


def checked_argv(user: str, argv: Sequence[str]) -> list[str]:
    """``argv`` as a list after checking the user name and each item (ValueError)."""
    if not patterns.matches(patterns.USER, user):
        raise ValueError(f"not a user name: {user!r}")
    items = list(argv)
    if not items or not items[0] or items[0].startswith("-"):
        raise ValueError(f"not a command: {items[:1]!r}")
    for item in items:
        if not isinstance(item, str) or "\x00" in item:
            raise ValueError("argv items must be strings without NUL bytes")
    return items


def remote_command(argv: Sequence[str]) -> str:
    """The one command line sent over SSH: every item quoted as one literal word."""
    return shlex.join(argv)


# ----------------------------------------------------------------------------- SSH


class SshRunner:
    """Log in to ``host:port`` as the user with a one-shot CA-signed certificate per call."""

    def __init__(self, host: str, port: int, known_hosts: str, ca_key: bytes, *,
                 cert_seconds: int = MAX_CERT_SECONDS, connect_timeout: float = 15.0) -> None:
        if not patterns.matches(patterns.HOSTNAME, host):
            raise ValueError(f"not a host name: {host!r}")
        if not known_hosts or not known_hosts.strip():
            raise ValueError("known_hosts is required: host keys are always verified")
        if not 0 < cert_seconds <= MAX_CERT_SECONDS:
            raise ValueError(f"certificate validity must be 1..{MAX_CERT_SECONDS} seconds")
        self.host = host
        self.port = port
        self._known_hosts = asyncssh.import_known_hosts(known_hosts)
        self._ca = asyncssh.import_private_key(ca_key)
        self._cert_seconds = cert_seconds
        self._connect_timeout = connect_timeout

    def __repr__(self) -> str:
        return f"SshRunner({self.host!r}, {self.port})"

    def one_shot_identity(self, user: str) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
        """A new in-memory key pair and its certificate for principal ``user`` only."""
        key = asyncssh.generate_private_key("ssh-ed25519")
        now = int(time.time())
        cert = self._ca.generate_user_certificate(
            key, f"hpchub-operator:{user}:{now}", principals=[user],
            valid_after=now - CLOCK_SKEW_SECONDS,
            valid_before=now - CLOCK_SKEW_SECONDS + self._cert_seconds,
            permit_x11_forwarding=False, permit_agent_forwarding=False,
            permit_port_forwarding=False, permit_pty=False, permit_user_rc=False,
        )
        return key, cert

    async def run(self, user: str, argv: Sequence[str], *, stdin: bytes | None = None,
                  max_seconds: float = 60.0) -> CommandResult:
        """Run ``argv`` as ``user`` over a fresh SSH connection."""
        command = remote_command(checked_argv(user, argv))
        key, cert = self.one_shot_identity(user)
        where = f"{user}@{self.host}:{self.port}"
        try:
            async with asyncio.timeout(max_seconds):
                async with asyncssh.connect(
                    self.host, self.port, username=user, client_keys=[(key, cert)],
                    known_hosts=self._known_hosts, agent_path=None, agent_forwarding=False,
                    x11_forwarding=False, password=None, kbdint_auth=False, config=[],
                    connect_timeout=self._connect_timeout,
                ) as conn:
                    done = await conn.run(command, input=stdin, encoding=None, check=False)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyMismatch(
                f"host key of {self.host}:{self.port} does not match the HPCCluster's "
                f"knownHosts (changed or wrong key): refusing to connect ({exc.reason})"
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise RunnerError(f"ssh {where}: certificate refused ({exc.reason})") from exc
        except TimeoutError as exc:
            raise RunnerError(f"ssh {where}: no answer within {max_seconds:g} s") from exc
        except (OSError, asyncssh.Error) as exc:
            raise RunnerError(f"ssh {where}: {type(exc).__name__}: {exc}") from exc
        return CommandResult(_status(done.exit_status, done.exit_signal),
                             _bytes(done.stdout), _bytes(done.stderr))

    async def close(self) -> None:
        """Nothing to release: every call has its own connection."""


def _status(code: int | None, signal: tuple[str, bool, str, str] | None) -> int:
    if code is not None and code >= 0:
        return code
    return 255 if signal is None else 128 + _SIGNALS.get(signal[0], 127)


_SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "SEGV": 11, "PIPE": 13, "TERM": 15}


def _bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return b""


# ----------------------------------------------------------------------------- sudo


class SudoRunner:
    """``sudo -n -u <user> -- argv...`` on this machine (an operator on the login node)."""

    def __init__(self, sudo: str = "/usr/bin/sudo") -> None:
        self._sudo = sudo

    def __repr__(self) -> str:
        return f"SudoRunner({self._sudo!r})"

    def command(self, user: str, argv: Sequence[str]) -> list[str]:
        """The argv actually executed (no shell)."""
        return [self._sudo, "-n", "-u", user, "--", *checked_argv(user, argv)]

    async def run(self, user: str, argv: Sequence[str], *, stdin: bytes | None = None,
                  max_seconds: float = 60.0) -> CommandResult:
        """Run ``argv`` as ``user`` through sudo, never through a shell."""
        full = self.command(user, argv)
        try:
            proc = await asyncio.create_subprocess_exec(
                *full, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=_sudo_env(), start_new_session=True)
        except OSError as exc:
            raise RunnerError(f"cannot run sudo: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin or b""), max_seconds)
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise RunnerError(f"sudo -u {user}: no answer within {max_seconds:g} s") from exc
        code = proc.returncode if proc.returncode is not None else 255
        if code == 1 and _sudo_refused(err):
            raise RunnerError(f"sudo refused to act as {user}: "
                              f"{' '.join(err.decode(errors='replace').split())}")
        return CommandResult(code if code >= 0 else 128 - code, out, err)

    async def close(self) -> None:
        """Nothing to release."""


def _sudo_env() -> dict[str, str]:
    """A minimal environment for sudo itself (sudo resets the user's environment anyway)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


def _sudo_refused(stderr: bytes) -> bool:
    """True when sudo itself (not the command) refused."""
    text = stderr.decode(errors="replace")
    return text.startswith("sudo: ") and any(
        s in text for s in ("password is required", "not allowed", "unknown user",
                            "is not in the sudoers", "may not run"))
