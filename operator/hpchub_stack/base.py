"""What every service of the local stack looks like, and where it keeps its files."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .process import ManagedProcess, Probe, log_tail


class Service(Protocol):
    """One real component run as local processes on 127.0.0.1."""

    name: str

    def start(self) -> None:
        """Start the processes and block until the service answers (raise ServiceError)."""

    def stop(self) -> None:
        """Stop every process of the service (terminate, then kill); idempotent."""

    def logs(self) -> dict[str, str]:
        """Tails of the service's log files by file name, printed when a test fails."""


class OneProcessService:
    """Mixin for a service that is one :class:`ManagedProcess` with its logs in ``dir``.

    The process writes to the first of :attr:`log_names`; :meth:`logs` shows them all.
    """

    name: str
    dir: Path
    ready_timeout: float
    log_names: tuple[str, ...]
    _proc: ManagedProcess | None = None

    @property
    def host(self) -> str:
        """The address the service listens on."""
        return "127.0.0.1"

    def _start_process(self, argv: Sequence[str], ready: Probe, *, cwd: Path | None = None,
                       user: str | None = None) -> None:
        """Start the process and block until ``ready`` passes (or raise ServiceError)."""
        self._proc = ManagedProcess(
            name=self.name,
            argv=argv,
            log_path=self.dir / self.log_names[0],
            cwd=cwd,
            user=user,
            ready=ready,
            ready_timeout=self.ready_timeout,
        )
        self._proc.start()

    def stop(self) -> None:
        """Stop the process (TERM, then KILL); idempotent."""
        if self._proc is not None:
            self._proc.stop()

    def logs(self) -> dict[str, str]:
        """Tails of the service's log files by file name."""
        return {name: log_tail(self.dir / name) for name in self.log_names}


def make_root(prefix: str = "hpchub-stack-") -> Path:
    """A fresh world-traversable temp directory (jobs and daemons run as other users)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("HPCHUB_STACK_TMP")))
    root.chmod(0o755)
    return root


def remove_root(root: Path) -> None:
    """Delete a stack directory, ignoring what is already gone."""
    shutil.rmtree(root, ignore_errors=True)
