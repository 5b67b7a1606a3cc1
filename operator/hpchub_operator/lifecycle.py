"""Pure lifecycle decisions: (current status, what was observed) -> new status.

No I/O here. The reconciler feeds in Slurm observations, readiness reports and stop requests;
these functions say what the status becomes and whether the job must be cancelled. Final
phases (Stopped, Failed) never change again. Table-tested in tests/unit/test_lifecycle.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from hpchub_api.constants import job_label
from hpchub_api.models import Condition, JupyterServerStatus, Phase

from .backends.base import JobInfo, JobState

Status = JupyterServerStatus

# Condition types kept on every JupyterServer.
SUBMITTED = "Submitted"
SCHEDULED = "Scheduled"
READY = "Ready"
SLURM_REACHABLE = "SlurmReachable"

ACTIVE = (Phase.SUBMITTED, Phase.QUEUED, Phase.STARTING, Phase.RUNNING, Phase.UNKNOWN)
FAST_POLL = (Phase.SUBMITTED, Phase.STARTING, Phase.STOPPING, Phase.UNKNOWN)
"""Phases whose next change the poll must see soon. Not Queued: a queued job may wait for
hours, and its start is pushed by the job script's start hint (the slow poll is the
safety net); not Running: the launcher's report and the poll's exit codes cover it."""


@dataclass(frozen=True)
class Decision:
    """The new status, and whether the Slurm job must be cancelled now."""

    status: Status
    cancel: bool = False


def iso(t: dt.datetime | None) -> str | None:
    """RFC 3339 UTC timestamp as Kubernetes writes them."""
    if t is None:
        return None
    return t.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_iso(value: str | None) -> dt.datetime | None:
    """Inverse of :func:`iso`."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def set_condition(conds: list[Condition], type_: str, status: bool | None, reason: str,
                  message: str, now: dt.datetime, generation: int | None) -> list[Condition]:
    """Conditions with ``type_`` set; lastTransitionTime only moves when status changes."""
    value: Literal["True", "False", "Unknown"] = (
        "Unknown" if status is None else ("True" if status else "False"))
    out: list[Condition] = []
    found = False
    for c in conds:
        if c.type != type_:
            out.append(c)
            continue
        found = True
        when = c.last_transition_time if c.status == value else iso(now)
        out.append(Condition(type=type_, status=value, reason=reason or None,
                             message=message or None, last_transition_time=when,
                             observed_generation=generation))
    if not found:
        out.append(Condition(type=type_, status=value, reason=reason or None,
                             message=message or None, last_transition_time=iso(now),
                             observed_generation=generation))
    return out


def _update(s: Status, **changes: Any) -> Status:
    return s.model_copy(update=changes)


def _cond(s: Status, type_: str, status: bool | None, reason: str, message: str,
          now: dt.datetime) -> Status:
    return _update(s, conditions=set_condition(list(s.conditions), type_, status, reason,
                                               message, now, s.observed_generation))


# ----------------------------------------------------------------------------- submission


def submitted(s: Status, job_id: str, now: dt.datetime, adopted: bool = False) -> Status:
    """A job now exists for this server (just submitted, or found by its tag)."""
    how = "adopted existing" if adopted else "submitted"
    s = _update(s, phase=Phase.SUBMITTED if s.phase in (Phase.PENDING, Phase.SUBMITTED)
                else s.phase, job_id=job_id, submitted_at=s.submitted_at or iso(now),
                reason="Adopted" if adopted else "Submitted",
                message=f"{how} {job_label(job_id)}")
    return _cond(s, SUBMITTED, True, "JobSubmitted", job_label(job_id), now)


def rejected(s: Status, message: str, now: dt.datetime) -> Status:
    """Slurm or policy refused the request: final, with the refusal as the message."""
    s = _update(s, phase=Phase.FAILED, reason="InvalidRequest", message=message,
                stopped_at=iso(now), url=None)
    return _cond(s, SUBMITTED, False, "InvalidRequest", message, now)


# ----------------------------------------------------------------------------- stop


def stop_requested(s: Status, now: dt.datetime, why: str = "Stop requested") -> Decision:
    """The stop flag was set or the resource is being deleted."""
    if s.phase.final:
        return Decision(s)
    if s.job_id is None:
        return Decision(_update(s, phase=Phase.STOPPED, reason="Stopped", message=why,
                                stopped_at=iso(now), url=None))
    return Decision(_update(s, phase=Phase.STOPPING, reason="Stopping",
                            message=f"{why}: cancelling {job_label(s.job_id)}"), cancel=True)


_request_stop = stop_requested

# ----------------------------------------------------------------------------- polling


def observe(s: Status, job: JobInfo | None, now: dt.datetime, *, stop_requested: bool,
            missing_polls: int, start_timeout: float) -> Decision:
    """Fold one batched Slurm observation of this server's job into its status."""
    if s.phase.final or s.job_id is None:
        return Decision(s)
    s = _cond(s, SLURM_REACHABLE, True, "Answered", "", now) if _unreachable(s) else s
    if job is None:
        return _missing(s, now, stop_requested, missing_polls)
    if job.state.finished:
        return Decision(_finished(s, job, now, stop_requested))
    if stop_requested:
        return Decision(s) if s.phase == Phase.STOPPING else _request_stop(s, now)
    if job.state in (JobState.PENDING, JobState.CONFIGURING) and not job.nodes:
        return Decision(_queued(s, job, now))
    if job.state == JobState.SUSPENDED:
        return Decision(_update(s, reason="Suspended", message="Slurm suspended the job"))
    return _started(s, job, now, start_timeout)


def _unreachable(s: Status) -> bool:
    return any(c.type == SLURM_REACHABLE and c.status != "True" for c in s.conditions)


def _missing(s: Status, now: dt.datetime, stop_requested: bool, missing_polls: int
             ) -> Decision:
    # A listing can race a submission; only two misses in a row mean the job is gone.
    if missing_polls < 2:
        return Decision(s)
    if stop_requested or s.phase == Phase.STOPPING:
        return Decision(_final(s, Phase.STOPPED, "Stopped",
                               f"{job_label(s.job_id or '')} is gone", now))
    return Decision(_final(
        s, Phase.STOPPED, "JobVanished",
        f"Slurm no longer knows job {s.job_id}: it ended while hpchub was not watching, "
        "so its outcome is unknown", now))


def _queued(s: Status, job: JobInfo, now: dt.datetime) -> Status:
    why = job.reason or "waiting for resources"
    est = iso(job.start_time) if job.start_time and job.start_time > now else None
    message = f"queued in Slurm ({why})" + (f", estimated start {est}" if est else "")
    s = _update(s, phase=Phase.QUEUED, reason=f"Queued{_camel(job.reason)}" if job.reason
                else "Queued", message=message, estimated_start=est)
    return _cond(s, SCHEDULED, False, "Pending", message, now)


def _started(s: Status, job: JobInfo, now: dt.datetime, start_timeout: float) -> Decision:
    node = job.first_node or s.node
    ends = iso(job.end_time) if job.end_time else s.ends_at
    started = iso(job.start_time) if job.start_time else (s.started_at or iso(now))
    if s.ready_at and s.url:  # ready before (e.g. back from Unknown): Running again
        s = _update(s, phase=Phase.RUNNING, node=node, ends_at=ends, reason="Ready",
                    message=f"server answers at {s.url}")
        return Decision(_cond(s, READY, True, "Answered", "", now))
    begin = parse_iso(started) or now
    if (now - begin).total_seconds() > start_timeout:
        s = _final(s, Phase.FAILED, "StartTimeout",
                   f"the server did not report ready within {start_timeout:.0f}s of the job "
                   "starting", now)
        return Decision(s, cancel=True)
    s = _update(s, phase=Phase.STARTING, node=node, started_at=started, ends_at=ends,
                estimated_start=None, reason="Starting",
                message=f"job running on {node}, starting the server")
    return Decision(_cond(s, SCHEDULED, True, "Allocated", f"node {node}", now))


_FAILED_REASONS = {
    JobState.NODE_FAIL: ("NodeFailure", "the node failed"),
    JobState.BOOT_FAIL: ("NodeFailure", "the node failed to boot"),
    JobState.OUT_OF_MEMORY: ("OutOfMemory", "the job ran out of memory"),
    JobState.PREEMPTED: ("Preempted", "the job was preempted by a higher-priority job"),
}


def _finished(s: Status, job: JobInfo, now: dt.datetime, stop_requested: bool) -> Status:
    code = job.exit_code
    s = _update(s, exit_code=code)
    was_ready = s.ready_at is not None
    if stop_requested or s.phase == Phase.STOPPING:
        return _final(s, Phase.STOPPED, "Stopped", f"{job_label(job.job_id)} cancelled", now)
    if job.state == JobState.TIMEOUT:
        return _final(s, Phase.STOPPED, "TimeLimit",
                      f"the job reached its time limit ({_limit(job)})", now)
    if job.state == JobState.DEADLINE:
        return _final(s, Phase.STOPPED, "Deadline", "the job reached its deadline", now)
    if job.state in _FAILED_REASONS:
        reason, text = _FAILED_REASONS[job.state]
        return _final(s, Phase.FAILED, reason, f"{text} (job {job.job_id})", now)
    if job.state == JobState.CANCELLED:
        return _final(s, Phase.FAILED, "CancelledOutsideHpchub",
                      f"job {job.job_id} was cancelled outside hpchub (scancel by the user "
                      "or an administrator)", now)
    if job.state == JobState.COMPLETED and was_ready:
        return _final(s, Phase.STOPPED, "ServerExited", "the server shut down", now)
    if was_ready:
        return _final(s, Phase.FAILED, "ServerCrashed",
                      f"the server's job ended with exit code {code}", now)
    return _final(s, Phase.FAILED, "JobFailedAtStart",
                  f"the job ended before the server was ready (exit code {code})", now)


def _final(s: Status, phase: Phase, reason: str, message: str, now: dt.datetime) -> Status:
    s = _update(s, phase=phase, reason=reason, message=message,
                stopped_at=s.stopped_at or iso(now), url=None, estimated_start=None)
    return _cond(s, READY, False, reason, message, now)


def _limit(job: JobInfo) -> str:
    if job.time_limit_minutes is None:
        return "walltime"
    return f"{job.time_limit_minutes} min"


def _camel(text: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in text.replace("_", " ").split())


def unreachable(s: Status, since: dt.datetime, now: dt.datetime, grace: float,
                error: str) -> Status:
    """Slurm did not answer. After ``grace`` seconds the server is Unknown — never Stopped,
    and nothing is cancelled. Known facts (job id, node, URL) are kept."""
    if s.phase.final or s.job_id is None:
        return s
    s = _cond(s, SLURM_REACHABLE, False, "NoAnswer", error[:500], now)
    if (now - since).total_seconds() < grace:
        return s
    return _update(s, phase=Phase.UNKNOWN, reason="SlurmUnreachable",
                   message=f"Slurm has not answered since {iso(since)}: {error[:300]}")


# ----------------------------------------------------------------------------- reports


def ready(s: Status, host: str, port: int, url: str, now: dt.datetime) -> Status:
    """The launcher reported a port and the operator saw the server answer there."""
    if s.phase.final or s.phase == Phase.STOPPING:
        return s
    s = _update(s, phase=Phase.RUNNING, host=host, port=port, url=url, ready_at=iso(now),
                reason="Ready", message=f"server answers at {url}")
    return _cond(s, READY, True, "Answered", url, now)


def start_failed(s: Status, failure: str, now: dt.datetime) -> Decision:
    """The launcher reported that the app failed to start: final, and cancel the job."""
    if s.phase.final:
        return Decision(s)
    return Decision(_final(s, Phase.FAILED, "AppFailedToStart", failure, now), cancel=True)


def status_patch(old: Status, new: Status) -> dict[str, Any]:
    """A JSON merge patch for ``.status`` turning ``old`` into ``new`` (nulls remove)."""
    a = old.model_dump(by_alias=True, mode="json", exclude_none=True)
    b = new.model_dump(by_alias=True, mode="json", exclude_none=True)
    patch: dict[str, Any] = {k: v for k, v in b.items() if a.get(k) != v}
    for k in a:
        if k not in b:
            patch[k] = None
    return patch
