"""Scenario 2 — spawn overhead: spawns one after another, request -> first 200.

overhead = (request -> first 200) - Slurm's own submit -> start - the app's own boot
(``jupyter-lab`` started directly as the user, no Slurm, no hub; median of a few boots).

Both systems go through their hub (REST spawn request) and Traefik. hpchub is also measured
at the JupyterServer level (CR created -> first 200 from the server's URL with its token,
no hub, no Traefik), which shows what the hub and the proxy add.
"""

from __future__ import annotations

import statistics
from typing import Any

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


def _overheads(runs: list[dict[str, Any]], boot: float) -> list[float | None]:
    return [r["total_s"] - (r["slurm_queue_s"] or 0.0) - boot for r in runs]


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
    ho, bo, co = _overheads(hpc, boot), _overheads(base, boot), _overheads(crs, boot)
    result: dict[str, Any] = {
        "scenario": 2, "title": "S2 spawn overhead (s)", "count": count,
        "app_boot_s": summary(boots),
        "level": "both through their hub and Traefik; hpchub also at the JupyterServer level",
        "hpchub": {"total_s": summary(r["total_s"] for r in hpc),
                   "slurm_queue_s": summary(r["slurm_queue_s"] or 0 for r in hpc),
                   "overhead_s": summary(v for v in ho if v is not None), "raw": ho,
                   "cr_total_s": summary(r["total_s"] for r in crs),
                   "cr_overhead_s": summary(v for v in co if v is not None), "cr_raw": co,
                   "runs": hpc, "cr_runs": crs},
        "batchspawner": {"total_s": summary(r["total_s"] for r in base),
                         "slurm_queue_s": summary(r["slurm_queue_s"] or 0 for r in base),
                         "overhead_s": summary(v for v in bo if v is not None), "raw": bo,
                         "runs": base},
        "table": [("S2 spawn request -> first 200 via hub + Traefik, s", "total_s", 2),
                  ("S2 Slurm submit -> start, s (1 s resolution)", "slurm_queue_s", 0),
                  (f"S2 overhead = total - Slurm - app boot ({boot:.2f}s), s",
                   "overhead_s", 2),
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
