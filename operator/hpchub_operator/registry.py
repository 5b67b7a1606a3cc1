"""The operator's in-memory view of every JupyterServer, fed by one kopf watch.

Spec and metadata come from the watch; the status held here is the one this operator last
wrote (it is the only writer), seeded from the object when first seen after a restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from hpchub_api import constants as c
from hpchub_api.models import JupyterServerSpec, JupyterServerStatus


@dataclass
class ServerRecord:
    """One JupyterServer as the operator tracks it."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: JupyterServerSpec | None
    spec_error: str | None
    status: JupyterServerStatus
    deleting: bool = False
    missing_polls: int = 0
    submit_attempted_at: float = 0.0
    """time.monotonic() of this operator's last submission attempt (0: none)."""
    cancel_sent_at: float = 0.0
    """time.monotonic() of the last cancel Slurm accepted for this server (0: none)."""
    cancel_pending: str | None = None
    """A job id whose cancel failed (Slurm unreachable); retried at every poll."""
    end_confirmed: bool = False
    """A listing since this operator started shows no live job of this (Stopped or Failed)
    server. Until then the poll keeps looking, so a job whose cancel was lost (Slurm
    unreachable, then an operator restart) is found and cancelled, not left to its walltime."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def cluster(self) -> str:
        return self.spec.cluster if self.spec else ""

    @property
    def stop_requested(self) -> bool:
        return self.deleting or bool(self.spec and self.spec.stop)

    def ref(self) -> dict[str, Any]:
        """Enough of the object for Events and owner references."""
        return {"apiVersion": c.API_VERSION, "kind": c.SERVER_KIND,
                "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid}}


def parse_spec(raw: dict[str, Any]) -> tuple[JupyterServerSpec | None, str | None]:
    """The typed spec, or None and a readable error (the schema should prevent that)."""
    try:
        return JupyterServerSpec.model_validate(raw), None
    except ValidationError as exc:
        errors = "; ".join(
            f"spec.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        return None, errors


class ServerRegistry:
    """uid -> ServerRecord, with lookups by cluster and user."""

    def __init__(self) -> None:
        self._by_uid: dict[str, ServerRecord] = {}

    def observe(self, body: dict[str, Any]) -> ServerRecord:
        """Record the latest spec/metadata of an object from the watch."""
        meta = body["metadata"]
        uid = meta["uid"]
        spec, error = parse_spec(body.get("spec") or {})
        rec = self._by_uid.get(uid)
        if rec is None:
            status = JupyterServerStatus.model_validate(body.get("status") or {})
            rec = ServerRecord(meta["namespace"], meta["name"], uid,
                               meta.get("generation", 1), spec, error, status)
            self._by_uid[uid] = rec
        else:
            rec.spec, rec.spec_error = spec, error
            rec.generation = meta.get("generation", rec.generation)
        rec.deleting = rec.deleting or bool(meta.get("deletionTimestamp"))
        return rec

    def forget(self, uid: str) -> None:
        self._by_uid.pop(uid, None)

    def get(self, uid: str) -> ServerRecord | None:
        return self._by_uid.get(uid)

    def __iter__(self) -> Iterator[ServerRecord]:
        return iter(list(self._by_uid.values()))

    def by_cluster(self, cluster: str) -> list[ServerRecord]:
        return [r for r in self if r.cluster == cluster]

    def active_of_user(self, cluster: str, user: str, exclude_uid: str = "") -> int:
        """Servers of ``user`` on ``cluster`` that are not finished."""
        return sum(1 for r in self.by_cluster(cluster)
                   if r.spec and r.spec.user == user and r.uid != exclude_uid
                   and not r.status.phase.final and not r.deleting)

    def phases(self) -> list[tuple[str, str]]:
        """(phase, cluster) of every server, for the metrics gauge."""
        return [(r.status.phase.value, r.cluster) for r in self]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
