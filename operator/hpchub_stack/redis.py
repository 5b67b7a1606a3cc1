"""A Redis server for Traefik's Redis provider (the hub's proxy routes), memory only.

``redis-server`` runs in the foreground with persistence off (``save ""``,
``appendonly no``), bound to 127.0.0.1, optionally with ``requirepass``. Readiness is a
RESP ``PING`` over a plain socket, so the stack itself does not need redis-py.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

from .base import OneProcessService
from .process import ServiceError, free_port, fresh_dir


def resp_command(*args: str) -> bytes:
    """Encode one command as a RESP array of bulk strings (safe for any argument bytes)."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def redis_ping(host: str, port: int, password: str | None, timeout: float = 1.0) -> bool:
    """True when the server answers PING with PONG (after AUTH when a password is set)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if password:
            sock.sendall(resp_command("AUTH", password))
            if not sock.recv(64).startswith(b"+OK"):
                return False
        sock.sendall(resp_command("PING"))
        return sock.recv(64).startswith(b"+PONG")


class Redis(OneProcessService):
    """redis-server on 127.0.0.1; implements the stack's Service protocol."""

    name = "redis"
    log_names = ("redis.log",)

    def __init__(
        self,
        root: Path,
        *,
        password: str | None = None,
        generate_password: bool = False,
        port: int | None = None,
        binary: str = "redis-server",
        ready_timeout: float = 30.0,
    ) -> None:
        """``password`` sets ``requirepass``; ``generate_password`` makes a random one."""
        self.dir = root / self.name
        self.password = password or (secrets.token_urlsafe(16) if generate_password else None)
        self.port = port
        self.binary = binary
        self.ready_timeout = ready_timeout

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        if self.port is None:
            raise ServiceError("redis: not started")
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def endpoint(self) -> str:
        """``host:port`` as Traefik's Redis provider wants it."""
        if self.port is None:
            raise ServiceError("redis: not started")
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Start redis-server and block until it answers PING."""
        if self.port is None:
            self.port = free_port()
        fresh_dir(self.dir)
        port = self.port
        self._start_process(
            self._argv(),
            ready=lambda: redis_ping(self.host, port, self.password),
            cwd=self.dir,
        )

    def _argv(self) -> list[str]:
        """A config file (0600, so the password is not on the command line) plus argv."""
        conf = self.dir / "redis.conf"
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            'save ""',
            "appendonly no",
            f"dir {self.dir}",
            "daemonize no",
        ]
        if self.password:
            lines.append(f'requirepass "{self.password}"')
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)
        return [self.binary, str(conf)]
