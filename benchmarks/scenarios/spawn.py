"""Scenario 2 — spawn overhead: spawns one after another, request -> first 200.

overhead = (request -> first 200) - Slurm's own submit -> start - the app's own boot
(``jupyter-lab`` started directly as the user, no Slurm, no hub; median of a few boots).
Slurm's submit -> start is read from slurmctld's log (milliseconds; the job record's
SubmitTime/StartTime hold whole seconds), and the overhead is split into the time before
Slurm has the job and the time after Slurm started it (see :mod:`benchmarks.timeline`).

Both systems go through their hub (REST spawn request) and Traefik. hpchub is also measured
at the JupyterServer level (CR created -> first 200 from the server's URL with its token,
no hub, no Traefik), which shows what the hub and the proxy add.
"""

from __future__ import annotations

import statistics
from typing import Any

from .. import timeline
from ..baseline.hub import BaselineHub
from ..measure import summary
from ..ourhub import OurHub
from ..spawning import (
    app_boot_seconds,
    baseline_wait,
    hpchub_begin,
    hpchub_wait,
    hub_begin,
    ourhub_wait,
)
from ..stack import USERS, Stack, delete_all_servers, log

COUNT = {"quick": 5, "full": 20}
LIMIT = 300.0


def _stages(runs: list[dict[str, Any]], boot: float) -> dict[str, Any]:
    """Summaries of the run figures, overhead included (runs without Slurm's log events are
    left out of the figures that need them)."""
    for r in runs:
        q = r.get("slurm_queue_s")
        r["overhead_s"] = None if q is None else r["total_s"] - q - boot
        after = r.get("from_start_s")
        r["after_start_s"] = None if after is None else after - boot

    def of(key: str) -> dict[str, Any]:
        return summary(r[key] for r in runs if r.get(key) is not None)

    keys = ("total_s", "slurm_queue_s", "overhead_s", "to_submit_s", "after_start_s",
            "start_to_launch_s")
    out: dict[str, Any] = {k: of(k) for k in keys}
    if any(r.get("running_to_200_s") is not None for r in runs):
        out["running_to_200_s"] = of("running_to_200_s")
    out["raw"] = [r["overhead_s"] for r in runs]
    out["runs"] = runs
    return out


def _one_after_another(hub: Any, begin: Any, wait: Any, stack: Stack, count: int
                       ) -> list[dict[str, Any]]:
    """Start ``hub``, spawn ``count`` servers one after another (each until usable), stop."""
    runs: list[dict[str, Any]] = []
    hub.start()
    try:
        for i in range(count):
            user, server = USERS[i % len(USERS)], f"spawn{i}"
            runs.append(wait(stack, hub, user, server, begin(hub, user, server), LIMIT))
        hub.stop_all()
    finally:
        hub.stop()
    return runs


def run(stack: Stack, mode: str) -> dict[str, Any]:
    count = COUNT[mode]
    boots = [app_boot_seconds() for _ in range(3)]
    boot = statistics.median(boots)
    log(f"scenario 2: app boot (jupyter-lab, direct) {boot:.2f}s; {count} hpchub spawns "
        "through its hub")
    hpc = _one_after_another(OurHub(stack, named_servers=count), hub_begin, ourhub_wait,
                             stack, count)
    log(f"scenario 2: {count} hpchub spawns at the JupyterServer level (no hub)")
    crs: list[dict[str, Any]] = []
    for i in range(count):
        name, user = f"spawn-{i}", USERS[i % len(USERS)]
        t0 = hpchub_begin(stack, name, user)
        crs.append(hpchub_wait(stack, name, t0, LIMIT))
    delete_all_servers(stack)
    log(f"scenario 2: {count} batchspawner spawns")
    base = _one_after_another(BaselineHub(stack), hub_begin, baseline_wait, stack, count)
    # One reading of the logs for every run (the baseline's have no JupyterServer name).
    timeline.attach(hpc + crs + base, stack.slurm.root / "log", stack.operator.log_path)
    cr = _stages(crs, boot)
    result: dict[str, Any] = {
        "scenario": 2, "title": "S2 spawn overhead (s)", "count": count,
        "app_boot_s": summary(boots),
        "level": "both through their hub and Traefik; hpchub also at the JupyterServer level",
        "hpchub": {**_stages(hpc, boot), "cr_total_s": cr["total_s"],
                   "cr_overhead_s": cr["overhead_s"], "cr_raw": cr["raw"],
                   "cr_runs": crs},
        "batchspawner": _stages(base, boot),
        "table": [("S2 spawn request -> first 200 via hub + Traefik, s", "total_s", 2),
                  ("S2 Slurm submit -> start (slurmctld log, ms), s", "slurm_queue_s", 2),
                  (f"S2 overhead = total - Slurm - app boot ({boot:.2f}s), s",
                   "overhead_s", 2),
                  ("S2   of which: request -> Slurm has the job, s", "to_submit_s", 2),
                  ("S2   of which: Slurm start -> first 200 - app boot, s",
                   "after_start_s", 2),
                  ("S2 Slurm start -> batch script launched (slurmd log), s",
                   "start_to_launch_s", 3),
                  ("S2 hpchub: server Running (operator) -> first 200 via hub, s",
                   "running_to_200_s", 2),
                  ("S2 hpchub without hub: CR -> first 200, s", "cr_total_s", 2),
                  ("S2 hpchub without hub: overhead, s", "cr_overhead_s", 2)],
        "plot_ylabel": "overhead (s)",
    }
    h, b = result["hpchub"]["overhead_s"]["median"], result["batchspawner"]["overhead_s"][
        "median"]
    result["target"] = ("hpchub overhead median <= 1 s and below batchspawner's "
                        "(both through their hub and Traefik)")
    result["target_met"] = h is not None and b is not None and h <= 1.0 and h < b
    result["target_note"] = f"hpchub {h:.2f} s, batchspawner {b:.2f} s"
    return result
