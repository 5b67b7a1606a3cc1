"""``python -m benchmarks [--mode quick|full] [--scenario N ...] [--out DIR]``."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .report import print_table, write
from .stack import bring_up, delete_all_servers, log, save_logs

SCENARIOS = {1: "scheduler_load", 2: "spawn", 3: "burst", 4: "footprint", 5: "proxy"}
ORDER = (5, 1, 4, 2, 3)
CPUS = {"quick": 64, "full": 400}
"""Slurm node CPUs (overcommitted: jobs are 1 CPU each, mostly idle)."""


@contextlib.contextmanager
def _logs_kept(stack: Any, dest: Path) -> Iterator[None]:
    """Copy the daemons' logs to ``dest`` however the run ends (Ctrl-C, a crash)."""
    try:
        yield
    finally:
        save_logs(stack, dest)
        log(f"logs kept in {dest}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--mode", choices=("quick", "full"), default="quick")
    ap.add_argument("--scenario", type=int, action="append", choices=sorted(SCENARIOS))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                    help="where results.json, table.txt and the plots go "
                         "(default: benchmarks/results)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks run Slurm and test users: run as root", file=sys.stderr)
        return 1
    wanted = [s for s in ORDER if s in (args.scenario or ORDER)]
    began = time.monotonic()
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    with bring_up(CPUS[args.mode]) as stack, _logs_kept(stack, args.out / "logs"):
        for number in wanted:
            module = importlib.import_module(f".scenarios.{SCENARIOS[number]}", __package__)
            t0 = time.monotonic()
            try:
                res = module.run(stack, args.mode)
            except Exception:
                failures.append(f"scenario {number}:\n{traceback.format_exc()}")
                log(f"scenario {number} FAILED:\n{traceback.format_exc()}")
                try:
                    delete_all_servers(stack)
                except Exception as exc:
                    log(f"cleanup after scenario {number} failed: {exc!r}")
                continue
            res["elapsed_s"] = time.monotonic() - t0
            log(f"scenario {number} done in {res['elapsed_s']:.0f}s")
            results.append(res)
    meta = {"mode": args.mode, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.platform()} cpus={os.cpu_count()}",
            "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
            "elapsed_s": time.monotonic() - began, "failures": failures}
    table = print_table(results, args.mode)
    write(results, args.out, meta, table)
    print(f"\nwritten: {args.out}/results.json, table.txt, scenario*.png, logs/ "
          f"(run took {meta['elapsed_s'] / 60:.1f} min)")
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
