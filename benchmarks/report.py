"""The run's table (stdout), JSON and one PNG per scenario."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .measure import fmt


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x"


def table_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, hpchub, baseline, ratio) rows for one scenario."""
    s = result["scenario"]
    rows: list[tuple[str, str, str, str]] = []
    if s == 1:
        w = int(result["window_seconds"])
        for r in result["rows"]:
            failed = "could not hold N" if r.get("batchspawner_failed") else None
            rows.append((f"S1 N={r['n']}: job-query RPCs to slurmctld per {w}s",
                         fmt(r["hpchub_job_query_rpcs_per_window"], digits=0),
                         failed or fmt(r["batchspawner_job_query_rpcs_per_window"], digits=0),
                         _ratio(r["ratio_job_queries_batchspawner_over_hpchub"])))
            rows.append((f"S1 N={r['n']}: all RPCs per {w}s (hpchub: + slurmrestd /jobs)",
                         fmt(r["hpchub_rpc_total_per_window"], digits=0) + " / "
                         + fmt(r["hpchub_rest_jobs_per_window"], digits=0),
                         failed or fmt(r["batchspawner_rpc_total_per_window"], digits=0), ""))
    elif s == 4:
        rows += [
            (f"S4 {result['servers']} servers: operator RSS MB (target <200)",
             fmt(result["rss_mb"], digits=0), "", ""),
            ("S4 operator CPU % of a core, idle hold (target <5)",
             fmt(result["cpu_pct_idle"], digits=1), "", ""),
            ("S4 operator CPU % of a core, while creating", fmt(result["cpu_pct_busy"],
                                                              digits=1), "", ""),
            ("S4 status latency Slurm RUNNING -> CR, s (p95 target <2)",
             f"p50 {result['latency']['median']:.2f} p95 {result['latency']['p95']:.2f}"
             if result["latency"]["median"] is not None else "-", "", ""),
            ("S4 create -> CR Queued (per server), s", fmt(result["create_to_queued"]), "",
             ""),
            ("S4 latency legs: allocate -> script / -> operator / -> watch, s",
             " / ".join(f"{(result.get('latency_legs') or {}).get(k, {}).get('median') or 0:.2f}"
                        for k in ("allocate_to_launch", "launch_to_operator",
                                  "operator_to_watch")), "", ""),
            ("S4 legs p95 (hinted starts): script -> hint / hint -> status, s",
             " / ".join(f"{(result.get('latency_legs') or {}).get(k, {}).get('p95') or 0:.2f}"
                        for k in ("launch_to_hint", "hint_to_status")), "", ""),
            ("S4 phases: create queued / start running / delete all, s",
             " / ".join(f"{result['seconds'][k]:.0f}" for k in
                        ("create_queued", "start_running", "delete_all")), "", ""),
        ]
    elif s == 5:
        for key, label in (("add_s", "route add -> routable, s"),
                           ("delete_s", "route delete -> 404, s")):
            rows.append((f"S5 {label}", fmt(result["traefik"][key], digits=3),
                         fmt(result["chp"][key], digits=3),
                         _ratio(_div(result["traefik"][key]["median"],
                                     result["chp"][key]["median"]))))
        for key, label in (("rss_growth_mb_per_1000", "memory trend MB / 1000 cycles"),
                           ("rss_end_mb", "RSS at end, MB")):
            rows.append((f"S5 {label} ({result['cycles']} cycles)",
                         f"{result['traefik'][key]:.1f}", f"{result['chp'][key]:.1f}", ""))
    elif s in (2, 3):
        for label, key, digits in result.get("table", []):
            base = result["batchspawner"].get(key)  # hpchub-only rows have no baseline
            rows.append((label, fmt(result["hpchub"][key], digits=digits),
                         "" if base is None else fmt(base, digits=digits),
                         "" if base is None else _ratio(_div(
                             base["median"], result["hpchub"][key]["median"]))))
    return rows


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def print_table(results: list[dict[str, Any]], mode: str) -> str:
    header = ("figure (median [min-max])", "hpchub", "baseline", "ratio")
    rows = [header] + [r for res in results for r in table_rows(res)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"hpchub benchmarks ({mode} mode); baseline = JupyterHub + batchspawner "
             "SlurmSpawner (S5: baseline column = configurable-http-proxy)"]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for res in results:
        if "target" in res:
            verdict = "met" if res.get("target_met") else "MISSED"
            lines.append(f"S{res['scenario']} target: {res['target']}: {verdict}"
                         + (f" ({res['target_note']})" if res.get("target_note") else ""))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write(results: list[dict[str, Any]], out: Path, meta: dict[str, Any], table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results},
                                                 indent=2, default=str))
    (out / "table.txt").write_text(table + "\n")
    for res in results:
        try:
            plot(res, out / f"scenario{res['scenario']}.png")
        except Exception as exc:  # a plot must not lose the figures
            print(f"plot of scenario {res['scenario']} failed: {exc!r}")


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = res["scenario"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if s == 1:
        ns = [r["n"] for r in res["rows"]]
        for key, label in (("hpchub_job_query_rpcs_per_window", "hpchub"),
                           ("batchspawner_job_query_rpcs_per_window", "batchspawner")):
            med = [r[key]["median"] for r in res["rows"]]
            lo = [r[key]["median"] - r[key]["min"] for r in res["rows"]]
            hi = [r[key]["max"] - r[key]["median"] for r in res["rows"]]
            ax.errorbar(ns, med, yerr=[lo, hi], marker="o", capsize=4, label=label)
        ax.set_xlabel("running servers N")
        ax.set_ylabel(f"slurmctld job-query RPCs per {int(res['window_seconds'])} s")
        ax.set_title("S1 scheduler load")
    elif s == 4:
        t = [x["t"] for x in res["samples"]]
        ax.plot(t, [x["rss_mb"] for x in res["samples"]], label="RSS MB")
        ax2 = ax.twinx()
        ax2.plot(t, [x["cpu_pct"] for x in res["samples"]], color="tab:orange", alpha=0.6,
                 label="CPU % of a core")
        ax2.set_ylabel("CPU % of a core")
        ax.set_xlabel("seconds")
        ax.set_ylabel("operator RSS (MB)")
        ax.set_title(f"S4 operator footprint, {res['servers']} JupyterServers")
    elif s == 5:
        for name in ("traefik", "chp"):
            xs = [p["cycles"] for p in res[name]["rss_series"]]
            ax.plot(xs, [p["rss_mb"] for p in res[name]["rss_series"]], marker=".",
                    label=name)
        ax.set_xlabel("add/delete cycles")
        ax.set_ylabel("proxy RSS (MB)")
        ax.set_title("S5 proxy memory under route churn with traffic")
    else:
        data = [[v for v in res[side]["raw"] if v is not None]
                for side in ("hpchub", "batchspawner")]
        ax.boxplot(data, tick_labels=["hpchub", "batchspawner"])
        ax.set_ylabel(res.get("plot_ylabel", "seconds"))
        ax.set_title(res["title"])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
