"""Everything the handlers share, built at operator start-up and closed at shutdown."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hpchub_api.models import Backend, HPCClusterSpec, Target

from . import callback
from .backends import factory
from .backends.base import SlurmBackend, SlurmUnavailable
from .clusters import ClusterConfigError, ClusterDirectory, ClusterRuntime, cluster_status
from .kube import KubeGateway
from .metrics import Metrics
from .readiness import Readiness, ReadyReport
from .reconciler import Reconciler
from .registry import ServerRegistry, utcnow
from .settings import OperatorSettings

log = logging.getLogger("hpchub.operator")


@dataclass
class OperatorContext:
    """The operator's long-lived objects (one per process)."""

    settings: OperatorSettings
    metrics: Metrics = field(default_factory=Metrics)
    registry: ServerRegistry = field(default_factory=ServerRegistry)
    kube: KubeGateway = field(init=False)
    clusters: ClusterDirectory = field(init=False)
    reconciler: Reconciler = field(init=False)
    readiness: Readiness = field(init=False)
    callback_port: int = 0
    metrics_port: int = 0
    ready: bool = False
    _runners: list[web.AppRunner] = field(default_factory=list)

    async def start(self) -> None:
        """Connect to Kubernetes, load the callback key, serve callbacks and metrics."""
        s = self.settings
        self.kube = await KubeGateway.connect()
        self.clusters = ClusterDirectory(self._make_backend, self.kube.get_cluster)
        key = await self.kube.ensure_secret(s.operator_namespace, s.callback_key_secret,
                                            "key")
        self.metrics.track_phases(self.registry.phases)
        app = callback.make_app(key, self._lookup, self._on_report,
                                registry=self.metrics.registry)
        self.callback_port = await self._serve(app, s.callback_host, s.callback_port)
        url = s.callback_url or f"http://127.0.0.1:{self.callback_port}"
        self.reconciler = Reconciler(s, self.kube, self.metrics, self.clusters, self.registry,
                                     key, url)
        self.readiness = Readiness(self.reconciler)
        self.metrics_port = await self._serve(self._metrics_app(), "0.0.0.0", s.metrics_port)
        self.ready = True
        log.info("callback server on port %d, metrics on port %d", self.callback_port,
                 self.metrics_port)

    async def stop(self) -> None:
        """Close servers and connections (kopf calls this on shutdown)."""
        self.ready = False
        for runner in self._runners:
            await runner.cleanup()
        await self.readiness.close()
        await self.reconciler.events.close()
        await self.clusters.close()
        await self.kube.close()

    async def _serve(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runners.append(runner)
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    def _metrics_app(self) -> web.Application:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.metrics.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        async def readyz(_: web.Request) -> web.Response:
            return web.json_response({"ready": self.ready}, status=200 if self.ready else 503)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        return app

    # ------------------------------------------------------------------ callbacks

    def _lookup(self, uid: str) -> callback.AllowedPorts | None:
        """The allowed port range of a known server, None for unknown ones."""
        rec = self.registry.get(uid)
        if rec is None or rec.spec is None:
            return None
        rt = self.clusters.known(rec.cluster)
        return callback.PortBounds() if rt is None else rt.spec.launcher.port_range

    async def _on_report(self, uid: str, report: callback.Report) -> None:
        # A RetryLater (e.g. Slurm has not shown the allocation yet) becomes a 503: the
        # launcher retries.
        await self.readiness.report(
            uid, ReadyReport(report.port, report.failure, started=report.kind == "started"))

    # ------------------------------------------------------------------ clusters

    async def _make_backend(self, name: str, spec: HPCClusterSpec, target: Target
                            ) -> SlurmBackend:
        login = target == Target.LOGIN
        if login or spec.slurm.backend in (Backend.SSH, Backend.SUDO):
            ca_key, ca_ref = None, spec.login.ssh_ca_secret
            if factory.needs_ssh_ca(spec, login) and ca_ref is not None:
                ca_key = await self.kube.secret_value(ca_ref.namespace, ca_ref.name,
                                                      ca_ref.key)
            timeout = max(self.settings.slurm_timeout, 30.0)  # an SSH login per command
            try:
                return (factory.login_backend(spec, ca_key, timeout) if login
                        else factory.cli_backend(spec, ca_key, timeout))
            except (factory.BackendConfigError, ValueError) as exc:
                raise ClusterConfigError(str(exc)) from exc
        from .backends.rest import SlurmRestBackend

        ref = spec.slurm.jwt_key_secret
        if ref is None or spec.slurm.rest_url is None:
            raise ClusterConfigError("slurm.restUrl and slurm.jwtKeySecret are required for "
                                     "the rest backend")
        key = await self.kube.secret_value(ref.namespace, ref.name, ref.key)
        return SlurmRestBackend(spec.slurm.rest_url, spec.slurm.rest_api_version, key,
                                spec.slurm.monitor_user, timeout=self.settings.slurm_timeout)

    async def check_cluster(self, rt: ClusterRuntime) -> None:
        """Ping the cluster, discover partitions, write HPCCluster status."""
        began = time.monotonic()
        try:
            facts, error = await rt.backend.ping(), None
        except SlurmUnavailable as exc:
            facts, error = None, str(exc)
            self.metrics.slurm_errors.labels(rt.name, "ping", "unavailable").inc()
        except Exception as exc:
            facts, error = None, f"{type(exc).__name__}: {exc}"
            self.metrics.slurm_errors.labels(rt.name, "ping", type(exc).__name__).inc()
        finally:
            self.metrics.slurm_latency.labels(rt.name, "ping").observe(
                time.monotonic() - began)
        await self.kube.patch_cluster_status(
            rt.name, cluster_status(facts, error, utcnow(), rt.generation))
