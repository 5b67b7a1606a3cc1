"""Where a spawn's time goes, from the daemons' own logs (millisecond timestamps).

Slurm's job record keeps ``SubmitTime``/``StartTime`` in whole seconds, too coarse to subtract
from a 3-s spawn. slurmctld logs the same two events with milliseconds
(``LogTimeFormat=iso8601_ms``, its default): ``_slurm_rpc_submit_batch_job: JobId=N`` when
the job is accepted and ``sched: Allocate JobId=N`` (or ``backfill: Started JobId=N``) when it
is given its node (``backfill: [_start_job: ]Started JobId=N`` when the backfill scheduler
starts it), the moments ``SubmitTime`` and ``StartTime`` record. slurmd logs
``Launching batch job N`` when it starts the batch script. hpchub's operator logs each phase
change of a JupyterServer (``ns/name: A -> B``). Nothing here instruments either system.

Timestamps are local wall-clock time on this machine, as ``time.time()`` gives.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

_CTLD = re.compile(r"^\[(\S+)\] (?:_slurm_rpc_submit_batch_job: JobId=(\d+)\b"
                   r"|(?:sched: Allocate|(?:sched/)?backfill: (?:_start_job: )?Started)"
                   r" JobId=(\d+)\b)")
_SLURMD = re.compile(r"^\[(\S+)\] Launching batch job (\d+)\b")
_OPERATOR = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO hpchub\.reconciler: "
                       r"(\S+)/(\S+): (\w+) -> (\w+)\b")

_CALLBACK = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO hpchub_operator\.callback: "
                       r"server (\S+) reported (its start|port|a failure)\b")
_REPORT_KINDS = {"its start": "started", "port": "port", "a failure": "failure"}


def _iso(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def _logged(stamp: str) -> float:
    """Epoch seconds of an operator log line's ``YYYY-mm-dd HH:MM:SS,mmm`` stamp."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def slurm_events(log_dir: Path) -> dict[str, dict[str, float]]:
    """{job id: {"submit", "start", "launch": epoch seconds}} from slurmctld.log and slurmd.log
    (the first of each event per job)."""
    out: dict[str, dict[str, float]] = {}
    for line in _lines(log_dir / "slurmctld.log"):
        m = _CTLD.match(line)
        if m:
            job, event = (m.group(2), "submit") if m.group(2) else (m.group(3), "start")
            out.setdefault(job, {}).setdefault(event, _iso(m.group(1)))
    for line in _lines(log_dir / "slurmd.log"):
        m = _SLURMD.match(line)
        if m:
            out.setdefault(m.group(2), {}).setdefault("launch", _iso(m.group(1)))
    return out


def phase_changes(operator_log: Path) -> dict[str, dict[str, float]]:
    """{JupyterServer name: {phase: epoch seconds it was first entered}} from the operator log.
    The name is unique within a scenario (the scenarios use each name once)."""
    out: dict[str, dict[str, float]] = {}
    for line in _lines(operator_log):
        m = _OPERATOR.match(line)
        if m:
            when = _logged(m.group(1))
            out.setdefault(m.group(3), {}).setdefault(m.group(5), when)
    return out


def callback_reports(operator_log: Path) -> dict[str, dict[str, float]]:
    """{JupyterServer uid: {"started" | "port" | "failure": epoch seconds}}: when each
    launcher report reached the operator (logged on arrival; the first of each kind)."""
    out: dict[str, dict[str, float]] = {}
    for line in _lines(operator_log):
        m = _CALLBACK.match(line)
        if m:
            when = _logged(m.group(1))
            out.setdefault(m.group(2), {}).setdefault(_REPORT_KINDS[m.group(3)], when)
    return out


def attach(runs: list[dict[str, Any]], slurm_log_dir: Path,
           operator_log: Path | None = None) -> None:
    """Add Slurm's events (and the operator's Running mark) to each run, in place.

    A run has ``t0``/``t200`` (epoch seconds), ``job_id`` and, for hpchub, ``server`` (the
    JupyterServer's name). Adds ``slurm_queue_s`` (submit -> start, ms resolution) and the
    stages ``to_submit_s`` (request -> Slurm accepted the job) and ``from_start_s`` (Slurm
    started it -> first 200); for hpchub also ``running_to_200_s`` (operator marks the
    server Running -> first 200 through the hub's route).
    """
    events = slurm_events(slurm_log_dir)
    phases = phase_changes(operator_log) if operator_log else {}
    for run in runs:
        ev = events.get(str(run.get("job_id")), {})
        sub, start = ev.get("submit"), ev.get("start")
        run["slurm_queue_s"] = start - sub if sub is not None and start is not None else None
        run["to_submit_s"] = sub - run["t0"] if sub is not None else None
        run["from_start_s"] = run["t200"] - start if start is not None else None
        run["start_to_launch_s"] = (ev["launch"] - start
                                    if start is not None and "launch" in ev else None)
        running = phases.get(str(run.get("server")), {}).get("Running")
        if running is not None:
            run["running_to_200_s"] = run["t200"] - running
