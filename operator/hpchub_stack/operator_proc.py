"""Run the hpchub operator as a real process against the stack (tests, demo, benchmarks)."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from .process import ManagedProcess, free_port, http_ok, log_tail


class OperatorProcess:
    """``hpchub operator`` with its own kubeconfig and HPCHUB_* settings."""

    name = "hpchub-operator"

    def __init__(self, root: Path, kubeconfig: Path, **settings: str) -> None:
        self.root = root
        self.kubeconfig = kubeconfig
        self.callback_port = int(settings.pop("callback_port", 0)) or free_port()
        self.metrics_port = int(settings.pop("metrics_port", 0)) or free_port()
        self.liveness_port = free_port()
        self.settings = settings
        self.log_path = root / "operator.log"
        self._proc: ManagedProcess | None = None
        self.starts = 0

    @property
    def callback_url(self) -> str:
        return f"http://127.0.0.1:{self.callback_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The operator's temporary files (the webhook's TLS key among them) go below the
        # stack's root, which goes with the stack: a killed operator runs no atexit.
        tmp = self.root / "operator-tmp"
        tmp.mkdir(mode=0o700, exist_ok=True)
        env.update({
            "TMPDIR": str(tmp),
            "KUBECONFIG": str(self.kubeconfig),
            "HPCHUB_CALLBACK_HOST": "127.0.0.1",
            "HPCHUB_CALLBACK_PORT": str(self.callback_port),
            "HPCHUB_CALLBACK_URL": self.callback_url,
            "HPCHUB_METRICS_PORT": str(self.metrics_port),
            "HPCHUB_LIVENESS_PORT": str(self.liveness_port),
        })
        env.update({f"HPCHUB_{k.upper()}": v for k, v in self.settings.items()})
        return env

    def _ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2)

    def start(self) -> None:
        """Start the operator and wait until its callback and metrics servers are up."""
        self.starts += 1
        self._proc = ManagedProcess(
            self.name, [sys.executable, "-m", "hpchub_operator.cli", "operator"],
            self.log_path, env=self._env(), ready=self._ready, ready_timeout=60)
        with open(self.log_path, "a") as log:
            log.write(f"--- operator start #{self.starts} ---\n")
        self._proc.start()

    def stop(self) -> None:
        """Graceful stop (SIGTERM, then SIGKILL)."""
        if self._proc is not None:
            self._proc.stop(grace=15)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL at once: a crash."""
        if self._proc is not None:
            self._proc.kill()
            self._proc = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def metrics(self) -> str:
        """The current /metrics text."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            return str(resp.read().decode())

    def logs(self) -> dict[str, str]:
        return {"operator.log": log_tail(self.log_path, 120)}
