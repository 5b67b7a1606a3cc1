"""Scenario 4 — operator footprint: many JupyterServers, most queued, some running.

Servers go to the ``mini`` HPCCluster (real launcher, minimal app). The queued ones ask for
the ``hold`` partition, which is DOWN: Slurm accepts the jobs and keeps them PENDING. We
sample the operator's RSS and CPU from /proc every second and watch the CRs: status latency
= first CR status showing the job started (Starting/Running) minus the moment slurmctld
allocated the job (``sched: Allocate JobId=N`` in its log, milliseconds: the job became
RUNNING then). Nothing polls Slurm besides the operator.
"""

from __future__ import annotations

import time
from typing import Any

from ..measure import ProcSampler, summary
from ..stack import (
    Stack,
    cancel_all_jobs,
    create_servers,
    delete_all_servers,
    log,
    phases,
    wait_phases,
)
from ..timeline import callback_reports, phase_changes, slurm_events
from ..watch import ServerWatch

SIZES = {"quick": (100, 30, 60.0), "full": (1000, 300, 600.0)}
"""mode -> (servers, of which running, idle hold seconds)."""
STARTED = ("Starting", "Running")
DELETE_LIMIT = {"quick": 300.0, "full": 300.0}
"""How long the operator alone may take to delete every server before Slurm is told."""


def run(stack: Stack, mode: str) -> dict[str, Any]:
    total, running, hold_s = SIZES[mode]
    queued_names = [f"fp-q-{i}" for i in range(total - running)]
    run_names = [f"fp-r-{i}" for i in range(running)]
    pid = stack.operator.pid
    sampler = ProcSampler(lambda: pid, interval=1.0)
    watch = ServerWatch(stack)
    sampler.start()
    watch.start()
    t0 = time.monotonic()
    created_at: dict[str, float] = {}
    try:
        log(f"scenario 4: creating {len(queued_names)} queued servers")
        for name in queued_names:
            created_at[name] = time.time()
            create_servers(stack.admin, [name], "mini", partition="hold")
        wait_phases(stack, queued_names, {"Queued"}, timeout=120 + total)
        t_queued = time.monotonic()
        log(f"scenario 4: queued in {t_queued - t0:.0f}s; creating {running} running servers")
        for name in run_names:
            created_at[name] = time.time()
            create_servers(stack.admin, [name], "mini")
        wait_phases(stack, run_names, {"Running"}, timeout=180 + 3 * running)
        t_busy_end = time.monotonic()
        log(f"scenario 4: {running} running after {t_busy_end - t_queued:.0f}s; "
            f"idle hold {hold_s:.0f}s")
        time.sleep(hold_s)
        t_end = time.monotonic()
    finally:
        watch.stop()
        samples = sampler.stop()
    final = phases(stack.admin)
    latencies, missing = [], 0
    # allocate -> slurmd starts the script -> the start hint reaches the operator -> the
    # operator writes the status (its log line, written right after the patch) -> the watch
    # sees it. Servers whose status a poll wrote before the hint came have no hint leg.
    legs: dict[str, list[float]] = {"allocate_to_launch": [], "launch_to_operator": [],
                                    "launch_to_hint": [], "hint_to_status": [],
                                    "operator_to_watch": []}
    by_name = {n: u for u, n in watch.names.items()}
    slurm = slurm_events(stack.slurm.root / "log")
    marks = phase_changes(stack.operator.log_path)
    hints = callback_reports(stack.operator.log_path)
    for name in run_names:
        uid = by_name.get(name)
        seen = watch.first_seen.get(uid or "", {})
        cr_t = min((seen[p] for p in STARTED if p in seen), default=None)
        ev = slurm.get(watch.job_ids.get(uid or "", ""), {})
        ref_t = ev.get("start")
        if cr_t is None or ref_t is None:
            missing += 1
            continue
        latencies.append(cr_t - ref_t)
        mark = marks.get(name, {})
        op_t = min((mark[p] for p in STARTED if p in mark), default=None)
        if "launch" in ev and op_t is not None:
            legs["allocate_to_launch"].append(ev["launch"] - ref_t)
            legs["launch_to_operator"].append(op_t - ev["launch"])
            legs["operator_to_watch"].append(cr_t - op_t)
            hint_t = hints.get(uid or "", {}).get("started")
            if hint_t is not None and hint_t <= op_t:
                legs["launch_to_hint"].append(hint_t - ev["launch"])
                legs["hint_to_status"].append(op_t - hint_t)
    to_queued = [watch.first_seen[by_name[n]]["Queued"] - created_at[n]
                 for n in queued_names if n in by_name
                 and "Queued" in watch.first_seen.get(by_name[n], {})]
    base = sampler.began
    idle = [s["cpu_pct"] for s in samples if s["t"] + base >= t_busy_end + 5]
    busy = [s["cpu_pct"] for s in samples if s["t"] + base < t_busy_end]
    log("scenario 4: deleting the servers")
    d0 = time.monotonic()
    delete_note = "operator alone"
    try:
        delete_all_servers(stack, timeout=DELETE_LIMIT[mode])
    except TimeoutError:
        # Each finalizer lists every job and retries every second: with hundreds of jobs
        # this is slow (see docs/performance.md). Cancel in Slurm so the run can go on.
        delete_note = f"not done after {DELETE_LIMIT[mode]:.0f}s; jobs cancelled with scancel"
        cancel_all_jobs(stack.slurm)
        delete_all_servers(stack, timeout=600 + total)
    delete_s = time.monotonic() - d0
    lat = summary(latencies)
    rss = summary(s["rss_mb"] for s in samples)
    idle_cpu = summary(idle)
    met = (rss["max"] or 0) < 200 and (idle_cpu["median"] or 0) < 5 and \
        lat["p95"] is not None and lat["p95"] < 2
    return {
        "scenario": 4, "title": "Operator footprint", "servers": total, "running": running,
        "phases_at_end": _count(final), "rss_mb": rss, "cpu_pct_idle": idle_cpu,
        "cpu_pct_busy": summary(busy), "latency": lat, "latency_missing": missing,
        "create_to_queued": summary(to_queued),
        "latency_legs": {k: summary(v) for k, v in legs.items()},
        "seconds": {"create_queued": t_queued - t0, "start_running": t_busy_end - t_queued,
                    "idle_hold": t_end - t_busy_end, "delete_all": delete_s},
        "delete_note": delete_note,
        "samples": samples,
        "target": "RSS < 200 MB, idle CPU < 5 % of a core, p95 status latency < 2 s",
        "target_met": met,
        "target_note": f"RSS max {rss['max']:.0f} MB, idle CPU median "
                       f"{idle_cpu['median'] or 0:.1f} %, latency p95 "
                       f"{lat['p95'] if lat['p95'] is not None else float('nan'):.2f} s",
    }


def _count(final: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for phase in final.values():
        out[phase] = out.get(phase, 0) + 1
    return out
