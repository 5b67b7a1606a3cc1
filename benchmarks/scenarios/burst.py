"""Scenario 3 — burst: many spawns at once (a class starting).

Every spawn is requested at once (one thread per user server: REST spawn request, to
hpchub's hub and to the baseline's, as a class clicking Start together; JupyterHub answers a
spawn request only after up to 10 s, its ``slow_spawn_timeout``), then each server is polled
through Traefik until its first 200. Reports successes, p50/p95 of request -> usable, and
the total time until the last one is usable.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..baseline.hub import BaselineHub
from ..measure import summary
from ..ourhub import OurHub
from ..spawning import baseline_wait, hub_begin, ourhub_wait
from ..stack import USERS, Stack, log

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


def _one(begin: Any, wait: Any, stack: Stack, hub: Any, user: str, server: str
         ) -> dict[str, Any]:
    """One spawn: request it, then wait for its first 200 through Traefik."""
    t0 = begin(hub, user, server)
    return wait(stack, hub, user, server, t0, LIMIT)  # type: ignore[no-any-return]


def _burst(hub: Any, begin: Any, wait: Any, stack: Stack, keys: list[tuple[str, str]]
           ) -> tuple[list[float | None], int, float]:
    """Start ``hub``, spawn every (user, server) at once, stop all; (times, failures, total)."""
    hub.start()
    try:
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(keys)) as pool:
            futs = [pool.submit(_one, begin, wait, stack, hub, u, s) for u, s in keys]
            times, failures = _collect(futs)
        total = time.monotonic() - began
        hub.stop_all()
    finally:
        hub.stop()
    return times, failures, total


def run(stack: Stack, mode: str) -> dict[str, Any]:
    count = COUNT[mode]
    keys = [(USERS[i % len(USERS)], f"burst{i}") for i in range(count)]
    log(f"scenario 3: burst of {count} hpchub spawns through its hub")
    hpc, hpc_fail, hpc_total = _burst(OurHub(stack, named_servers=count), hub_begin,
                                      ourhub_wait, stack, keys)
    log(f"scenario 3: burst of {count} batchspawner spawns")
    base, base_fail, base_total = _burst(BaselineHub(stack), hub_begin, baseline_wait,
                                         stack, keys)
    res: dict[str, Any] = {
        "scenario": 3, "title": f"S3 burst of {count}: request -> usable (s)", "count": count,
        "level": "both through their hub and Traefik",
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
