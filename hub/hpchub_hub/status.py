"""Pure helpers of the spawner: object names, the hub environment handed to the operator,
and what a JupyterServer's phase and Events mean for JupyterHub (poll, progress, errors)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from hpchub_api import patterns as p
from hpchub_api.constants import job_label
from hpchub_api.models import Phase

_UNSAFE = re.compile(r"[^a-z0-9-]+")
_SECRET_ENV = frozenset({"JUPYTERHUB_API_TOKEN"})
"""Never put into the CR: the token travels in the Secret."""

ACTIVE = frozenset(
    {Phase.PENDING, Phase.SUBMITTED, Phase.QUEUED, Phase.STARTING, Phase.RUNNING, Phase.UNKNOWN}
)
"""Phases in which JupyterHub must consider the server alive (poll returns None)."""

_PROGRESS = {
    Phase.PENDING: 10,
    Phase.SUBMITTED: 20,
    Phase.QUEUED: 30,
    Phase.STARTING: 60,
    Phase.UNKNOWN: 60,
    Phase.RUNNING: 100,
    Phase.STOPPING: 100,
    Phase.STOPPED: 100,
    Phase.FAILED: 100,
}


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-")


def object_name(user: str, server_name: str, prefix: str = "jupyter") -> str:
    """A deterministic, collision-safe DNS-1123 name for a user's (named) server.

    ``jupyter-alice`` or ``jupyter-alice--gpu``; when escaping changed anything or the name
    would be too long, a hash of the exact (user, server) pair is appended.
    """
    raw = f"{prefix}-{user}" + (f"--{server_name}" if server_name else "")
    safe = f"{prefix}-{_slug(user)}" + (f"--{_slug(server_name)}" if server_name else "")
    if safe == raw and len(safe) <= 48:
        return safe
    digest = hashlib.sha256(f"{user}\0{server_name}".encode()).hexdigest()[:8]
    return f"{safe[:48].rstrip('-')}-{digest}"


def secret_name(object_name: str) -> str:
    """The Secret holding the server's hub API token."""
    return f"{object_name}-hub-token"


def hub_environment(env: Mapping[str, str]) -> list[dict[str, str]]:
    """The JUPYTERHUB_* variables of ``env`` the CR may carry (no token, no empty values,
    only names and values the CRD accepts), sorted by name."""
    out = []
    for name in sorted(env):
        value = env[name]
        if name in _SECRET_ENV or not p.matches(p.HUB_ENV_NAME, name) or not value:
            continue
        if len(value) > p.MAX_ENV_VALUE or not p.matches(p.ENV_VALUE, value):
            continue
        out.append({"name": name, "value": value})
    return out


def phase_of(obj: Mapping[str, Any] | None) -> Phase:
    """The server's phase (Pending before the operator wrote any status)."""
    raw = ((obj or {}).get("status") or {}).get("phase")
    try:
        return Phase(raw) if raw else Phase.PENDING
    except ValueError:
        return Phase.UNKNOWN


def deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def exit_status(obj: Mapping[str, Any] | None) -> int | None:
    """What Spawner.poll returns: None while alive, 0 when stopped or gone, 1 (or the exit
    code) when failed."""
    if obj is None:
        return 0
    phase = phase_of(obj)
    if phase in ACTIVE and not deleting(obj):
        return None
    if phase == Phase.FAILED:
        code = (obj.get("status") or {}).get("exitCode")
        return int(code) if isinstance(code, int) and code != 0 else 1
    return 0


def failure_message(obj: Mapping[str, Any]) -> str:
    """The operator's reason for a Failed/Stopped server, for the user's eyes."""
    st = obj.get("status") or {}
    reason, message = st.get("reason"), st.get("message")
    text = f"{reason}: {message}" if reason and message else str(
        message or reason or f"the server is {phase_of(obj).value}")
    log_file = st.get("logFile")
    return f"{text} (job log on the cluster: {log_file})" if log_file else text


def progress_of(phase: Phase) -> int:
    return _PROGRESS.get(phase, 50)


def phase_message(obj: Mapping[str, Any]) -> str:
    """One line about the server's state, as the spawn page shows it."""
    phase = phase_of(obj)
    st = obj.get("status") or {}
    if phase == Phase.PENDING:
        return "Server requested, waiting for the operator"
    if phase == Phase.SUBMITTED:
        return f"{job_label(str(st.get('jobId', '')))} submitted"
    if phase == Phase.QUEUED:
        parts = [f"Queued in Slurm (job {st.get('jobId', '?')})"]
        if st.get("reason"):
            parts.append(f"reason: {st['reason']}")
        if st.get("estimatedStart"):
            parts.append(f"estimated start: {st['estimatedStart']}")
        return ", ".join(parts)
    if phase == Phase.STARTING:
        node = f" on {st['node']}" if st.get("node") else ""
        return f"Job running{node}, starting JupyterLab"
    if phase == Phase.RUNNING:
        return f"Server ready at {st.get('node') or st.get('host') or 'the node'}"
    if phase == Phase.UNKNOWN:
        return "Scheduler unreachable, waiting"
    return f"{phase.value}: {failure_message(obj)}"


def event_message(event: Mapping[str, Any]) -> str:
    """A Kubernetes Event as one line."""
    return f"{event.get('reason') or 'Event'}: {event.get('message') or ''}".strip()


def event_key(event: Mapping[str, Any]) -> tuple[str, int]:
    """Identity of an Event occurrence (a repeated Event bumps its count)."""
    return (str((event.get("metadata") or {}).get("uid")), int(event.get("count") or 1))


def event_time(event: Mapping[str, Any]) -> str:
    return str(
        event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or ""
    )
