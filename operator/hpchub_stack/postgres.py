"""A PostgreSQL 15 server for the hub's database, run as the ``postgres`` Unix user.

``initdb`` makes a private data directory; ``postgres`` listens on 127.0.0.1 on a free port
with its Unix socket in a directory of its own (``-k``), so it never touches the system
cluster. The binaries are called directly from ``/usr/lib/postgresql/15/bin``: Debian's
``pg_ctl`` on PATH is a wrapper script that expects its own cluster layout.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg2
from psycopg2 import sql

from .base import OneProcessService
from .process import ServiceError, free_port, log_tail

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
SUPERUSER = "postgres"


class Postgres(OneProcessService):
    """A throw-away PostgreSQL server with one database and one password role."""

    name = "postgres"
    log_names = ("postgres.log", "initdb.log")

    def __init__(
        self,
        root: Path,
        *,
        database: str = "jupyterhub",
        role: str = "jupyterhub",
        password: str | None = None,
        port: int | None = None,
        bin_dir: Path = PG_BIN,
        ready_timeout: float = 60.0,
    ) -> None:
        self.dir = root / self.name
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "socket"
        self.database = database
        self.role = role
        self.password = password or secrets.token_hex(16)
        self.port = port
        self.bin_dir = bin_dir
        self.ready_timeout = ready_timeout

    # -- public surface ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL for the role and database (``postgresql+psycopg2://...``)."""
        return (
            f"postgresql+psycopg2://{self.role}:{self.password}"
            f"@{self.host}:{self._port()}/{self.database}"
        )

    @property
    def dsn(self) -> str:
        """libpq keyword/value connection string for the role and database."""
        return (
            f"host={self.host} port={self._port()} dbname={self.database} "
            f"user={self.role} password={self.password}"
        )

    def start(self) -> None:
        """initdb, start postgres, then create the role and the database."""
        if self.port is None:
            self.port = free_port()
        self._initdb()
        self._start_process(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-k",
                str(self.socket_dir),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ],
            ready=self._superuser_can_connect,
            cwd=self.dir,
            user=OS_USER,
        )
        self._create_database()

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnect clients), then TERM/KILL; idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.proc is not None and proc.running:
            os.kill(proc.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.proc.wait(timeout=10)
        proc.stop()

    # -- steps ------------------------------------------------------------------------------

    def _port(self) -> int:
        if self.port is None:
            raise ServiceError("postgres: not started")
        return self.port

    def _initdb(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        for path in (self.dir, self.data_dir, self.socket_dir):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.chown(path, OS_USER, OS_USER)
        self.dir.chmod(0o755)
        res = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            capture_output=True,
            user=OS_USER,
            cwd=self.dir,
            timeout=120,
            check=False,
        )
        (self.dir / "initdb.log").write_bytes(res.stdout + res.stderr)
        if res.returncode != 0:
            raise ServiceError(
                f"postgres: initdb failed ({res.returncode})\n{log_tail(self.dir / 'initdb.log')}"
            )

    def _superuser_connect(self) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            connect_timeout=2,
        )

    def _superuser_can_connect(self) -> bool:
        conn = self._superuser_connect()
        conn.close()
        return True

    def _create_database(self) -> None:
        conn = self._superuser_connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(self.role), sql.Literal(self.password)
                    )
                )
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(self.database), sql.Identifier(self.role)
                    )
                )
        finally:
            conn.close()
