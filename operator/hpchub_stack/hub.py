"""JupyterHub run as a real process with the project's configuration (hub/jupyterhub_config.py).

Everything the hub talks to is given through HPCHUB_* variables (see hpchub_hub.config): the
API server (a kubeconfig of the hub's ServiceAccount), Redis and Traefik (started before,
Traefik as its own process), PostgreSQL and LDAP. The hub keeps its cookie secret in its data
directory, so a restart keeps users logged in; servers outlive a restart (they are Slurm jobs).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

from .process import ManagedProcess, free_port, http_ok, log_tail, stop_strays

PROJECT_CONFIG = Path(__file__).resolve().parents[2] / "hub" / "jupyterhub_config.py"


class JupyterHubProcess:
    """``jupyterhub -f hub/jupyterhub_config.py``; implements the stack's Service protocol."""

    name = "jupyterhub"

    def __init__(
        self,
        root: Path,
        settings: Mapping[str, str],
        *,
        public_url: str,
        config_file: Path = PROJECT_CONFIG,
        hub_port: int | None = None,
        ready_timeout: float = 90.0,
    ) -> None:
        """``settings`` are HPCHUB_* variables (and KUBECONFIG); ``public_url`` is Traefik's
        entrypoint, through which readiness is checked too."""
        self.dir = root / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file = config_file
        self.public_url = public_url.rstrip("/")
        self.hub_port = hub_port or free_port()
        self.settings = dict(settings)
        self.crypt_key = secrets.token_hex(32)
        self.ready_timeout = ready_timeout
        self.log_path = self.dir / "jupyterhub.log"
        self.starts = 0
        self._proc: ManagedProcess | None = None

    @property
    def hub_url(self) -> str:
        """Where the hub itself listens (not through Traefik)."""
        return f"http://127.0.0.1:{self.hub_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env.update(
            {
                "HPCHUB_PUBLIC_URL": self.public_url,
                "HPCHUB_HUB_BIND_URL": self.hub_url,
                "HPCHUB_DATA_DIR": str(self.dir),
                "JUPYTERHUB_CRYPT_KEY": self.crypt_key,
            }
        )
        env.update(self.settings)
        return env

    def _ready(self) -> bool:
        return (http_ok(f"{self.hub_url}/hub/health", timeout=2.0)
                and http_ok(f"{self.public_url}/hub/health", timeout=2.0))

    def start(self) -> None:
        """Start the hub; block until it answers directly and through Traefik."""
        self.starts += 1
        with open(self.log_path, "a") as log:
            log.write(f"--- jupyterhub start #{self.starts} ---\n")
        jupyterhub = Path(sys.executable).parent / "jupyterhub"
        self._proc = ManagedProcess(
            self.name,
            [str(jupyterhub), "-f", str(self.config_file)],
            self.log_path,
            env=self.env(),
            cwd=self.dir,
            ready=self._ready,
            ready_timeout=self.ready_timeout,
        )
        self._proc.start()

    def stop(self) -> None:
        """SIGTERM (the hub leaves the servers running), then SIGKILL; then its managed
        services (the idle culler runs in a session of its own and would outlive a killed
        hub), found by their environment: this hub's API URL and the service name, which
        user servers do not have."""
        if self._proc is not None:
            self._proc.stop(grace=30)
            self._proc = None
            stop_strays(f"JUPYTERHUB_API_URL={self.hub_url}/hub/api",
                        "JUPYTERHUB_SERVICE_NAME=idle-culler")

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def logs(self) -> dict[str, str]:
        return {"jupyterhub.log": log_tail(self.log_path, 150)}
