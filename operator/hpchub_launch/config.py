"""The launcher's configuration, read once from the environment the job script sets.

Standard library only: this runs on HPC nodes from the user's Python.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APPS = ("jupyterlab", "notebook")
# off: the app shares the node's network; required: sandboxed or not started at all;
# optional: sandboxed when the node can do it, else unisolated with a warning.
ISOLATION_MODES = ("off", "required", "optional")
_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_BASE_URL = re.compile(r"^/([A-Za-z0-9._~-]+/)*$")
_CALLBACK_URL = re.compile(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")
# The placeholders HPCHUB_WORKDIR may start with (the same as the CRD's workingDirectory).
_WORKDIR_VARS = ("HOME", "WORK", "SCRATCH", "STORE")


class ConfigError(ValueError):
    """The environment does not describe a launch we can do."""


@dataclass(frozen=True)
class Callback:
    """Where and how to report: enough to say "failed" even when the rest is invalid."""

    uid: str
    url: str
    token: str

    @property
    def report_url(self) -> str:
        """The report endpoint of this server on the operator."""
        return f"{self.url.rstrip('/')}/v1/servers/{self.uid}/report"


@dataclass(frozen=True)
class LaunchConfig:
    """Everything the launcher needs, validated."""

    app: str
    hub_mode: bool
    port_min: int
    port_max: int
    bind_ip: str
    base_url: str
    start_timeout: float
    stop_grace: float
    workdir: Path | None
    isolation: str = "off"


def read_callback(env: Mapping[str, str]) -> Callback:
    """HPCHUB_SERVER_UID, HPCHUB_CALLBACK_URL and HPCHUB_CALLBACK_TOKEN (all required)."""
    uid = _required(env, "HPCHUB_SERVER_UID")
    url = _required(env, "HPCHUB_CALLBACK_URL")
    token = _required(env, "HPCHUB_CALLBACK_TOKEN")
    if not _UID.match(uid):
        raise ConfigError("HPCHUB_SERVER_UID is not a Kubernetes uid")
    if not _CALLBACK_URL.match(url):
        raise ConfigError("HPCHUB_CALLBACK_URL must be an http(s) URL without credentials")
    return Callback(uid=uid, url=url, token=token)


def read_config(env: Mapping[str, str]) -> LaunchConfig:
    """The launch settings; raise ConfigError naming the first bad variable."""
    hub_mode = bool(env.get("JUPYTERHUB_API_TOKEN"))
    app = env.get("HPCHUB_APP") or "jupyterlab"
    if app not in APPS:
        raise ConfigError(f"HPCHUB_APP must be one of {', '.join(APPS)}")
    if not hub_mode and not env.get("JUPYTER_TOKEN"):
        raise ConfigError("JUPYTER_TOKEN must be set in standalone mode")
    port_min = _int(env, "HPCHUB_PORT_MIN", 20000, 1024, 65535)
    port_max = _int(env, "HPCHUB_PORT_MAX", 60000, 1024, 65535)
    if port_max < port_min:
        raise ConfigError("HPCHUB_PORT_MAX must not be below HPCHUB_PORT_MIN")
    default_base = env.get("JUPYTERHUB_SERVICE_PREFIX", "/") if hub_mode else "/"
    isolation = env.get("HPCHUB_ISOLATION") or "off"
    if isolation not in ISOLATION_MODES:
        raise ConfigError(f"HPCHUB_ISOLATION must be one of {', '.join(ISOLATION_MODES)}")
    return LaunchConfig(
        app=app,
        hub_mode=hub_mode,
        port_min=port_min,
        port_max=port_max,
        bind_ip=env.get("HPCHUB_BIND_IP") or "0.0.0.0",
        base_url=_base_url(env.get("HPCHUB_BASE_URL") or default_base),
        start_timeout=_int(env, "HPCHUB_START_TIMEOUT", 300, 1, 86400),
        stop_grace=_int(env, "HPCHUB_STOP_GRACE", 5, 0, 300),
        workdir=resolve_workdir(env.get("HPCHUB_WORKDIR", ""), env),
        isolation=isolation,
    )


def resolve_workdir(raw: str, env: Mapping[str, str]) -> Path | None:
    """Expand a leading ``~`` or ``$HOME``/``$WORK``/``$SCRATCH``/``$STORE``; no shell."""
    if not raw:
        return None
    head, sep, rest = raw.partition("/")
    if head == "~":
        head = "$HOME"
    if head.startswith("$"):
        name = head[1:]
        if name not in _WORKDIR_VARS:
            allowed = ", $".join(_WORKDIR_VARS)
            raise ConfigError(f"HPCHUB_WORKDIR may only start with ~ or ${allowed}")
        if not env.get(name):
            raise ConfigError(f"HPCHUB_WORKDIR uses ${name}, which is not set")
        head = env[name]
    path = Path(head + sep + rest)
    if not path.is_absolute():
        raise ConfigError("HPCHUB_WORKDIR must be an absolute path")
    return path


def _required(env: Mapping[str, str], name: str) -> str:
    """A variable that must be set and non-empty."""
    value = env.get(name, "")
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer variable within [low, high], or its default when unset."""
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ConfigError(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value


def _base_url(raw: str) -> str:
    """A base URL path that starts and ends with '/'."""
    url = raw if raw.endswith("/") else raw + "/"
    if not _BASE_URL.match(url):
        raise ConfigError("HPCHUB_BASE_URL must be a path like /user/alice/")
    return url
