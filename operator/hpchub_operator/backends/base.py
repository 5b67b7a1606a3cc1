"""The Slurm backend interface: how the operator acts on one cluster as one user.

Three implementations share it and one conformance suite: slurmrestd with per-user JWTs
(``rest``), the Slurm commands over SSH with one-shot certificates (``ssh``), and the Slurm
commands through ``sudo -u`` (``sudo``). Errors are split in two on purpose: a refused
request (the user's fault, final) and an unavailable scheduler (transient, never "job gone").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class JobState(StrEnum):
    """Slurm job states folded into what the operator decides on."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    SUSPENDED = "SUSPENDED"
    OTHER = "OTHER"

    @property
    def finished(self) -> bool:
        return self in _FINISHED

    @classmethod
    def parse(cls, raw: str | Iterable[str] | None) -> JobState:
        """Slurm's state (``"RUNNING"``, ``["RUNNING"]``, ``"CANCELLED by 0"``) as an enum."""
        if raw is None:
            return cls.OTHER
        if not isinstance(raw, str):
            raw = next(iter(raw), "")
        word = raw.strip().split(" ", 1)[0].upper()
        try:
            return cls(word)
        except ValueError:
            return cls.OTHER


_FINISHED = {
    JobState.COMPLETED, JobState.CANCELLED, JobState.FAILED, JobState.TIMEOUT,
    JobState.NODE_FAIL, JobState.PREEMPTED, JobState.BOOT_FAIL, JobState.DEADLINE,
    JobState.OUT_OF_MEMORY,
}


@dataclass(frozen=True)
class JobInfo:
    """What the operator needs to know about one Slurm job."""

    job_id: str
    user: str
    state: JobState
    comment: str = ""
    name: str = ""
    reason: str = ""
    """Slurm's state reason (e.g. ``Priority``, ``Resources``, ``NonZeroExitCode``)."""
    nodes: str = ""
    """Allocated node list (compressed Slurm hostlist), empty while pending."""
    exit_code: int | None = None
    signal: int | None = None
    submit_time: dt.datetime | None = None
    start_time: dt.datetime | None = None
    """Actual start for running jobs; Slurm's estimate for pending ones."""
    end_time: dt.datetime | None = None
    """Walltime end for running jobs; actual end for finished ones."""
    time_limit_minutes: int | None = None

    @property
    def first_node(self) -> str:
        """The batch host: the first node of the allocation (where the launcher runs)."""
        return first_host(self.nodes)


def first_host(hostlist: str) -> str:
    """First host of a Slurm hostlist expression: ``n[01-03],m1`` -> ``n01``."""
    if not hostlist:
        return ""
    head = hostlist.split(",", 1)[0] if "[" not in hostlist.split(",", 1)[0] else hostlist
    if "[" not in head:
        return head
    prefix, rest = head.split("[", 1)
    first = rest.split("]", 1)[0].split(",", 1)[0].split("-", 1)[0]
    return prefix + first


@dataclass(frozen=True)
class PartitionFacts:
    """A partition as the cluster describes it (written to HPCCluster status)."""

    name: str
    state: str
    nodes: int
    cpus: int
    memory_mb: int | None = None
    gpu_types: tuple[str, ...] = ()
    max_time_limit: str | None = None
    default_time_limit: str | None = None
    is_default: bool = False


@dataclass(frozen=True)
class ClusterFacts:
    """The answer to a health check: version and partitions."""

    version: str
    partitions: tuple[PartitionFacts, ...] = ()


@dataclass(frozen=True)
class JobRequest:
    """A fully validated job submission (built by ``jobscript.build_request``)."""

    user: str
    name: str
    comment: str
    script: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    nodes: int = 1
    cpus_per_task: int = 1
    memory_mb: int | None = None
    gres: str | None = None
    """e.g. ``gpu:a100:2``"""
    time_limit_minutes: int = 60
    constraint: str | None = None
    working_directory: str = "/tmp"  # noqa: S108 - a path on the compute node, for Slurm
    output: str = "/dev/null"
    environment: Mapping[str, str] = field(default_factory=dict)
    """Variables for the job only (the user's own tokens); never written into the script."""
    login_node: str | None = None
    """Login-node servers: the node asked for (None: the backend picks one)."""


class BackendError(Exception):
    """Base class of backend errors."""


class SlurmUnavailable(BackendError):
    """Slurm did not answer (timeout, controller down, connection refused): state unknown."""


class AccessRefused(SlurmUnavailable):
    """The operator refused to act on the cluster (e.g. a login node's host key changed):
    nothing is known, and only an administrator can fix it."""


class SlurmRejected(BackendError):
    """Slurm answered and refused the request (bad partition, account, limits): final."""


class SlurmBackend(Protocol):
    """Act on one Slurm cluster. Every call names the user it acts as."""

    single_job_query: bool
    """True when :meth:`job` asks about that job alone; False when it costs a listing
    (``squeue --json`` of Slurm 22.05 ignores ``--jobs``), so a shared listing is better."""

    async def ping(self) -> ClusterFacts:
        """Check the cluster answers; return its version and partitions."""

    async def submit(self, request: JobRequest) -> str:
        """Submit a batch job as ``request.user``; return the job id."""

    async def jobs(self, tag_prefix: str) -> dict[str, JobInfo]:
        """All jobs whose comment starts with ``tag_prefix``, by job id, in ONE query."""

    async def job(self, job_id: str, tag_prefix: str) -> JobInfo | None:
        """One job, if it still exists and its comment starts with ``tag_prefix``; else
        None (see :attr:`single_job_query` for what it costs)."""

    async def cancel(self, job_id: str, user: str) -> None:
        """Cancel a job as its user; a job that is already gone is not an error."""

    async def node_address(self, node: str) -> str:
        """The address the node is reached at (Slurm's NodeAddr), for the readiness check."""

    async def close(self) -> None:
        """Release connections."""
