"""Prometheus metrics of the operator (one registry, passed around explicitly)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _PhaseCollector(Collector):
    def __init__(self, snapshot: Callable[[], Iterable[tuple[str, str]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("hpchub_servers", "JupyterServers by phase and cluster",
                                   labels=["phase", "cluster"])
        counts: dict[tuple[str, str], int] = {}
        for phase, cluster in self._snapshot():
            counts[(phase, cluster)] = counts.get((phase, cluster), 0) + 1
        for (phase, cluster), n in sorted(counts.items()):
            family.add_metric([phase, cluster], n)
        yield family


class Metrics:
    """All operator metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.submit_to_running = Histogram(
            "hpchub_submit_to_running_seconds", "From job submission to a server that answers",
            ["cluster"], registry=r,
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))
        self.slurm_latency = Histogram(
            "hpchub_slurm_request_seconds", "Latency of Slurm requests", ["cluster", "op"],
            registry=r, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.slurm_errors = Counter(
            "hpchub_slurm_errors_total", "Slurm requests that failed", ["cluster", "op", "kind"],
            registry=r)
        self.polls = Counter(
            "hpchub_slurm_polls_total", "Batched job listings made", ["cluster"], registry=r)
        self.transitions = Counter(
            "hpchub_phase_transitions_total", "Phase transitions written", ["cluster", "phase"],
            registry=r)
        self.events_dropped = Counter(
            "hpchub_events_dropped_total", "Kubernetes Events dropped (their queue was full)",
            registry=r)
        self.handler_success = Counter(
            "hpchub_handler_success_total", "Kopf handlers that succeeded",
            ["handler", "namespace", "name"], registry=r)

    def track_phases(self, snapshot: Callable[[], Iterable[tuple[str, str]]]) -> None:
        """Export a gauge of servers by (phase, cluster), computed on scrape."""
        self.registry.register(_PhaseCollector(snapshot))
