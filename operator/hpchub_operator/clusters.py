"""HPCCluster runtime state: typed spec, its Slurm backend, and what the last poll saw."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from hpchub_api.models import Backend, HPCClusterSpec, HPCClusterStatus, PartitionInfo, Target

from .backends.base import ClusterFacts, JobInfo, SlurmBackend
from .lifecycle import iso

BackendFactory = Callable[[str, HPCClusterSpec, Target], Awaitable[SlurmBackend]]


class ClusterConfigError(Exception):
    """The HPCCluster cannot be used as configured (missing Secret, bad backend)."""


@dataclass
class ClusterRuntime:
    """One HPCCluster as the operator uses it."""

    name: str
    spec: HPCClusterSpec
    backend: SlurmBackend
    """The Slurm backend (compute-node servers)."""
    generation: int = 0
    login_backend: SlurmBackend | None = None
    """Login-node processes behind the same interface (None: no login nodes)."""
    last_jobs: dict[str, JobInfo] = field(default_factory=dict)
    listings: dict[Target, tuple[float, dict[str, JobInfo]]] = field(default_factory=dict)
    """Per target: (monotonic start, jobs) of the last completed listing."""
    listing_tasks: dict[Target, tuple[float, asyncio.Future[dict[str, JobInfo]]]] = field(
        default_factory=dict)
    """Per target: the listing in flight, shared by concurrent callers."""
    submitted: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a server of the cluster was just submitted: the poller looks sooner."""
    unreachable_since: dt.datetime | None = None
    last_error: str = ""
    node_addresses: dict[str, str] = field(default_factory=dict)

    def backend_for(self, target: Target) -> SlurmBackend:
        """The backend that runs servers of ``target`` on this cluster."""
        if target == Target.LOGIN:
            if self.login_backend is None:
                raise ClusterConfigError(f"cluster {self.name} has no login nodes configured")
            return self.login_backend
        return self.backend

    def backends(self) -> list[SlurmBackend]:
        return [b for b in (self.backend, self.login_backend) if b is not None]

    def interval(self, busy: bool, jitter: float) -> float:
        """Next poll delay: fast while servers change state, slow when all are steady."""
        s = self.spec.slurm
        base = s.fast_poll_seconds if busy else s.slow_poll_seconds
        if self.unreachable_since is not None:
            base = min(s.slow_poll_seconds, base * 2)
        return base * (1 + random.uniform(-jitter, jitter))  # noqa: S311 - not crypto


def next_wait(interval: float, elapsed: float) -> float:
    """Wait until ``interval`` after the poll began (a poll that took 1 s of a 2 s interval
    waits 1 s), but never less than a quarter of it, so a slow Slurm is not hammered."""
    return max(interval - elapsed, interval / 4)


class ClusterDirectory:
    """name -> ClusterRuntime, built lazily from the HPCCluster objects."""

    def __init__(self, factory: BackendFactory,
                 fetch: Callable[[str], Awaitable[dict[str, Any] | None]]) -> None:
        self._factory = factory
        self._fetch = fetch
        self._clusters: dict[str, ClusterRuntime] = {}

    async def load(self, body: dict[str, Any]) -> ClusterRuntime:
        """(Re)build the runtime of an HPCCluster object when its generation changed."""
        name = body["metadata"]["name"]
        generation = body["metadata"].get("generation", 0)
        current = self._clusters.get(name)
        if current is not None and current.generation == generation:
            return current
        try:
            spec = HPCClusterSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            raise ClusterConfigError(f"invalid HPCCluster spec: {exc}") from exc
        backend = await self._factory(name, spec, Target.SLURM)
        login = await self._factory(name, spec, Target.LOGIN) if spec.login.nodes else None
        runtime = ClusterRuntime(name, spec, backend, generation, login)
        if current is not None:
            runtime.last_jobs = current.last_jobs
            runtime.node_addresses = current.node_addresses
            for old in current.backends():
                await old.close()
        self._clusters[name] = runtime
        return runtime

    async def get(self, name: str) -> ClusterRuntime | None:
        """The runtime of cluster ``name``, loading it if needed; None if it does not exist."""
        if name in self._clusters:
            return self._clusters[name]
        body = await self._fetch(name)
        return None if body is None else await self.load(body)

    def known(self, name: str) -> ClusterRuntime | None:
        return self._clusters.get(name)

    async def drop(self, name: str) -> None:
        rt = self._clusters.pop(name, None)
        if rt is not None:
            for backend in rt.backends():
                await backend.close()

    async def close(self) -> None:
        for name in list(self._clusters):
            await self.drop(name)


def cluster_status(facts: ClusterFacts | None, error: str | None, now: dt.datetime,
                   generation: int | None) -> dict[str, Any]:
    """The HPCCluster status written after a health check (pure)."""
    if facts is None:
        status = HPCClusterStatus(reachable=False, message=f"unreachable: {error}",
                                  last_checked_at=iso(now), observed_generation=generation)
        return status.model_dump(by_alias=True, mode="json", exclude_none=True)
    parts = [PartitionInfo(
        name=p.name, state=p.state, nodes=p.nodes, cpus=p.cpus, memory_mb=p.memory_mb,
        gpu_types=list(p.gpu_types), max_time_limit=p.max_time_limit,
        default_time_limit=p.default_time_limit, is_default=p.is_default,
    ) for p in facts.partitions]
    status = HPCClusterStatus(reachable=True, slurm_version=facts.version, partitions=parts,
                              message=f"Slurm {facts.version}, {len(parts)} partitions",
                              last_checked_at=iso(now), observed_generation=generation)
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def backend_kind(spec: HPCClusterSpec) -> Backend:
    return spec.slurm.backend
