"""Scenario 1 — scheduler load: N running servers held for several poll periods.

For each N, hpchub (JupyterServers created directly, as the hub would) and then the baseline
(batchspawner through its hub) hold N running servers while we count, per window of 30 s
(batchspawner's default poll_interval; two of hpchub's default 15 s slow polls):
slurmctld RPCs by type (``sdiag`` deltas) and, for hpchub, slurmrestd ``/jobs`` requests.
hpchub's servers run the minimal app (:mod:`benchmarks.minimal_app`) behind the real launcher
and readiness report; the baseline runs real ``jupyterhub-singleuser`` (batchspawner needs its
own singleuser). The app does not take part in either system's polling.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..baseline.hub import BaselineHub
from ..measure import job_queries, rpc_delta, summary
from ..stack import USERS, Stack, create_servers, delete_all_servers, log, wait_phases

WINDOW = 30.0


def polls_total(stack: Stack) -> float:
    total = 0.0
    for line in stack.operator.metrics().splitlines():
        if line.startswith("hpchub_slurm_polls_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def snapshot(stack: Stack, with_operator: bool) -> dict[str, Any]:
    return {"t": time.monotonic(), "rpc": stack.slurm.sdiag_counts(),
            "rest_jobs": stack.slurm.rest_request_count("/jobs"),
            "polls": polls_total(stack) if with_operator else 0.0}


def hold(stack: Stack, windows: int, with_operator: bool = True) -> list[dict[str, Any]]:
    """Count what reaches Slurm in ``windows`` consecutive windows of WINDOW seconds."""
    out = []
    before = snapshot(stack, with_operator)
    for _ in range(windows):
        time.sleep(max(0.0, before["t"] + WINDOW - time.monotonic()))
        after = snapshot(stack, with_operator)
        delta = rpc_delta(before["rpc"], after["rpc"])
        out.append({"seconds": after["t"] - before["t"], "rpc_by_type": delta,
                    "rpc_total": sum(delta.values()), "job_query_rpcs": job_queries(delta),
                    "rest_jobs_requests": after["rest_jobs"] - before["rest_jobs"],
                    "operator_polls": after["polls"] - before["polls"]})
        before = after
    return out


def run_hpchub(stack: Stack, n: int, windows: int) -> dict[str, Any]:
    cluster = "mini"
    names = [f"load-{n}-{i}" for i in range(n)]
    began = time.monotonic()
    create_servers(stack.admin, names, cluster)
    wait_phases(stack, names, {"Running"}, timeout=120 + 10 * n)
    log(f"  hpchub: {n} servers Running in {time.monotonic() - began:.0f}s; holding")
    time.sleep(16)  # let the poller drop from the fast (starting) to the slow interval
    result = {"app": "minimal", "windows":
              hold(stack, windows)}
    delete_all_servers(stack)
    return result


BATCH = 20
"""Baseline servers requested at once in scenario 1."""


def run_baseline(stack: Stack, hub: BaselineHub, n: int, windows: int) -> dict[str, Any]:
    keys = [(USERS[i % len(USERS)], f"load{n}x{i}") for i in range(n)]
    began = time.monotonic()
    # In batches of BATCH, each ready before the next: JupyterHub answers a spawn request
    # only when the server is up or after its 10 s slow_spawn_timeout (one by one, 100
    # spawns take many minutes), and 100 singleusers booting at once on 2 cores exceed
    # batchspawner's http_timeout (the first full run lost servers that way).
    for first in range(0, n, BATCH):
        batch = keys[first:first + BATCH]
        with ThreadPoolExecutor(max_workers=len(batch)) as pool:
            statuses = list(pool.map(lambda key: hub.spawn(*key), batch))
        refused = [(key, status) for key, status in zip(batch, statuses, strict=True)
                   if status not in (201, 202)]
        if refused:
            raise RuntimeError(f"baseline spawns refused: {refused[:5]}")
        hub.wait_ready(keys[:first + len(batch)], timeout=180 + 15 * len(batch))
    log(f"  batchspawner: {n} servers ready in {time.monotonic() - began:.0f}s; holding")
    time.sleep(5)
    result = {"app": "jupyterhub-singleuser", "windows": hold(stack, windows, False)}
    hub.stop_all()
    return result


def run(stack: Stack, mode: str) -> dict[str, Any]:
    sizes = [5, 10] if mode == "quick" else [10, 50, 100]
    windows = 2 if mode == "quick" else 4
    raw: dict[str, Any] = {"hpchub": {}, "batchspawner": {}}
    for n in sizes:
        log(f"scenario 1: hpchub, N={n}")
        raw["hpchub"][n] = run_hpchub(stack, n, windows)
    hub = BaselineHub(stack)
    hub.start()
    try:
        for n in sizes:
            log(f"scenario 1: batchspawner, N={n}")
            try:
                raw["batchspawner"][n] = run_baseline(stack, hub, n, windows)
            except Exception as exc:  # keep what was measured: hpchub's rows, smaller N
                log(f"scenario 1: batchspawner could not hold N={n}: {exc}"[:2000])
                raw["batchspawner"][n] = {"failed": str(exc)[:2000], "windows": []}
                hub.stop_all()
                break
    finally:
        hub.stop()
    return result_of(raw, sizes)


def result_of(raw: dict[str, Any], sizes: list[int]) -> dict[str, Any]:
    """The scenario's rows and target from the raw windows of both systems (also used to
    re-render a saved run)."""
    rows: list[dict[str, Any]] = []
    for n in sizes:  # every N hpchub held; the baseline's figures are empty where it failed
        h = raw["hpchub"][n]["windows"]
        base = raw["batchspawner"].get(n) or {"failed": "not run (a smaller N failed)"}
        b = base.get("windows") or []
        hq = summary(w["job_query_rpcs"] for w in h)
        bq = summary(w["job_query_rpcs"] for w in b)
        rows.append({
            "n": n, "batchspawner_failed": None if b else base.get("failed", "failed"),
            "hpchub_job_query_rpcs_per_window": hq,
            "hpchub_rest_jobs_per_window": summary(w["rest_jobs_requests"] for w in h),
            "hpchub_rpc_total_per_window": summary(w["rpc_total"] for w in h),
            "batchspawner_job_query_rpcs_per_window": bq,
            "batchspawner_rpc_total_per_window": summary(w["rpc_total"] for w in b),
            "ratio_job_queries_batchspawner_over_hpchub":
                (bq["median"] / hq["median"])
                if hq["median"] and bq["median"] is not None else None,
        })
    hpc_counts = [r["hpchub_rest_jobs_per_window"]["median"] for r in rows]
    return {"scenario": 1, "title": "Scheduler load", "window_seconds": WINDOW,
            "rows": rows, "raw": raw,
            "target": "hpchub /jobs requests per window independent of N",
            "target_met": max(hpc_counts) - min(hpc_counts) <= 1}
