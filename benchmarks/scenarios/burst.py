"""Scenario 3 — burst: many spawns at once (a class starting).

Every spawn is requested as fast as one client can (hpchub: CRs created in a loop; baseline:
REST spawn requests in a loop), then each server is polled until its first 200. Reports
successes, p50/p95 of request -> usable, and the total time until the last one is usable.

LABEL: hpchub at the JupyterServer level, as in scenario 2.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..baseline.hub import BaselineHub
from ..measure import summary
from ..spawning import baseline_begin, baseline_wait, hpchub_begin, hpchub_wait
from ..stack import USERS, Stack, delete_all_servers, log

COUNT = {"quick": 10, "full": 50}
LIMIT = 600.0


def _collect(futures: list[Any]) -> tuple[list[float | None], int]:
    times: list[float | None] = []
    failures = 0
    for fut in futures:
        try:
            times.append(fut.result()["total_s"])
        except Exception as exc:
            log(f"scenario 3: a spawn failed: {exc}")
            times.append(None)
            failures += 1
    return times, failures


def run(stack: Stack, mode: str) -> dict[str, Any]:
    count = COUNT[mode]
    log(f"scenario 3: burst of {count} hpchub spawns")
    began = time.monotonic()
    starts = [(f"burst-{i}", hpchub_begin(stack, f"burst-{i}", USERS[i % len(USERS)]))
              for i in range(count)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        futs = [pool.submit(hpchub_wait, stack, name, t0, LIMIT) for name, t0 in starts]
        hpc, hpc_fail = _collect(futs)
    hpc_total = time.monotonic() - began
    delete_all_servers(stack)
    log(f"scenario 3: burst of {count} batchspawner spawns")
    hub = BaselineHub(stack)
    hub.start()
    try:
        began = time.monotonic()
        keys = [(USERS[i % len(USERS)], f"burst{i}") for i in range(count)]
        starts_b = [(u, s, baseline_begin(hub, u, s)) for u, s in keys]
        with ThreadPoolExecutor(max_workers=count) as pool:
            futs = [pool.submit(baseline_wait, stack, hub, u, s, t0, LIMIT)
                    for u, s, t0 in starts_b]
            base, base_fail = _collect(futs)
        base_total = time.monotonic() - began
        hub.stop_all()
    finally:
        hub.stop()
    res: dict[str, Any] = {
        "scenario": 3, "title": f"S3 burst of {count}: request -> usable (s)", "count": count,
        "level": "hpchub: JupyterServer level (CR -> server URL); baseline: hub + Traefik",
        "hpchub": {"usable_s": summary(v for v in hpc if v is not None), "raw": hpc,
                   "failures": hpc_fail, "total_s": {"n": 1, "median": hpc_total,
                                                      "min": hpc_total, "max": hpc_total}},
        "batchspawner": {"usable_s": summary(v for v in base if v is not None), "raw": base,
                         "failures": base_fail,
                         "total_s": {"n": 1, "median": base_total, "min": base_total,
                                     "max": base_total}},
        "table": [(f"S3 burst {count}: request -> usable, s", "usable_s", 1),
                  (f"S3 burst {count}: total until the last is usable, s", "total_s", 1)],
        "target": "zero failures in the burst",
        "target_met": hpc_fail == 0,
        "target_note": f"hpchub {count - hpc_fail}/{count} ok, batchspawner "
                       f"{count - base_fail}/{count} ok",
    }
    return res
