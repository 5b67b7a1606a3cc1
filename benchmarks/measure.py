"""Small measurement helpers: summaries, /proc sampling, Slurm RPC deltas."""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

# slurmctld RPCs that read job state (what a poller costs the controller).
JOB_QUERY_RPCS = ("REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE", "REQUEST_JOB_USER_INFO")
# Our own observation (sdiag) is not charged to anyone.
IGNORED_RPCS = ("REQUEST_STATS_INFO",)


def summary(values: Iterable[float]) -> dict[str, Any]:
    """median, min, max, p95 and count of ``values`` (None fields when empty)."""
    vals = sorted(float(v) for v in values)
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None, "p95": None}
    return {"n": len(vals), "median": statistics.median(vals), "min": vals[0],
            "max": vals[-1], "p95": percentile(vals, 95)}


def percentile(sorted_vals: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    rank = max(1, math.ceil(pct / 100 * len(sorted_vals)))
    return sorted_vals[min(rank, len(sorted_vals)) - 1]


def fmt(s: Mapping[str, Any], unit: str = "", digits: int = 2) -> str:
    """``median [min-max]`` for a table cell."""
    if not s or s.get("median") is None:
        return "-"
    return (f"{s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]")


def rpc_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Per-type RPC counts between two sdiag snapshots (our sdiag calls left out)."""
    out = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {k: v for k, v in out.items() if v > 0 and k not in IGNORED_RPCS}


def job_queries(delta: Mapping[str, int]) -> int:
    return sum(delta.get(k, 0) for k in JOB_QUERY_RPCS)


def proc_rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` (MB), from /proc/PID/statm."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (seconds), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (for a proxy started through a wrapper)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


@dataclass
class ProcSampler:
    """Samples RSS (MB) and CPU (% of one core) of a process every ``interval`` seconds."""

    pid_of: Callable[[], int | None]
    interval: float = 1.0
    samples: list[dict[str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    began: float = 0.0
    """time.monotonic() at start; sample ``t`` is seconds since then."""

    def start(self) -> None:
        self.began = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> list[dict[str, float]]:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        return self.samples

    def _run(self) -> None:
        began = self.began
        last: tuple[float, float] | None = None
        while not self._stop.is_set():
            pid = self.pid_of()
            if pid:
                try:
                    now, cpu, rss = time.monotonic(), proc_cpu_seconds(pid), proc_rss_mb(pid)
                except OSError:
                    pid = None
                else:
                    pct = 100 * (cpu - last[1]) / (now - last[0]) if last else 0.0
                    if last:
                        self.samples.append({"t": now - began, "rss_mb": rss, "cpu_pct": pct})
                    last = (now, cpu)
            self._stop.wait(self.interval)


def slope_per(xs: list[float], ys: list[float], per: float = 1.0) -> float:
    """Least-squares slope of ys over xs, times ``per`` (0 with fewer than 2 points)."""
    if len(xs) < 2:
        return 0.0
    return float(statistics.linear_regression(xs, ys).slope * per)
