"""What every service of the local stack looks like, and where it keeps its files."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol


class Service(Protocol):
    """One real component run as local processes on 127.0.0.1."""

    name: str

    def start(self) -> None:
        """Start the processes and block until the service answers (raise ServiceError)."""

    def stop(self) -> None:
        """Stop every process of the service (terminate, then kill); idempotent."""

    def logs(self) -> dict[str, str]:
        """Tails of the service's log files by file name, printed when a test fails."""


def make_root(prefix: str = "hpchub-stack-") -> Path:
    """A fresh world-traversable temp directory (jobs and daemons run as other users)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("HPCHUB_STACK_TMP")))
    root.chmod(0o755)
    return root


def remove_root(root: Path) -> None:
    """Delete a stack directory, ignoring what is already gone."""
    shutil.rmtree(root, ignore_errors=True)
