"""Kopf handlers: thin. Each one finds the record, calls the reconciler, maps errors."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from hpchub_api import constants as c

from .clusters import ClusterConfigError, ClusterRuntime, cluster_status, next_wait
from .context import OperatorContext
from .reconciler import Refused, RetryLater
from .registry import utcnow

REGISTRY = kopf.OperatorRegistry()
SERVERS = (c.GROUP, c.VERSION, c.SERVER_PLURAL)
CLUSTERS = (c.GROUP, c.VERSION, c.CLUSTER_PLURAL)
log = logging.getLogger("hpchub.handlers")

Handler = Callable[..., Awaitable[Any]]


def _ctx(memo: Any) -> OperatorContext:
    ctx: OperatorContext = memo.ctx
    return ctx


def counted(name: str) -> Callable[[Handler], Handler]:
    """Count successes per object (tests assert each handler succeeds exactly once) and map
    our exceptions to kopf's retry semantics."""

    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def handler(**kwargs: Any) -> Any:
            meta = kwargs["body"]["metadata"]
            try:
                result = await fn(**kwargs)
            except RetryLater as exc:
                raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
            except Refused as exc:
                raise kopf.PermanentError(str(exc)) from exc
            _ctx(kwargs["memo"]).metrics.handler_success.labels(
                name, meta.get("namespace") or "", meta["name"]).inc()
            return result

        return handler

    return wrap


# ----------------------------------------------------------------------------- servers


@kopf.on.event(*SERVERS, registry=REGISTRY)
async def server_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Keep the shared in-memory view current (every watch event, no API calls)."""
    ctx = _ctx(memo)
    if type == "DELETED":
        ctx.registry.forget(body["metadata"]["uid"])
    else:
        ctx.registry.observe(dict(body))


@kopf.on.create(*SERVERS, registry=REGISTRY)
@counted("create")
async def server_created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Submit (or adopt) the Slurm job of a new JupyterServer."""
    ctx = _ctx(memo)
    await ctx.reconciler.start(ctx.registry.observe(dict(body)))


@kopf.on.resume(*SERVERS, registry=REGISTRY)
@counted("resume")
async def server_resumed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """After an operator restart: adopt the job by its tag, or submit if there is none."""
    ctx = _ctx(memo)
    await ctx.reconciler.start(ctx.registry.observe(dict(body)))


@kopf.on.field(*SERVERS, field="spec.stop", registry=REGISTRY)
@counted("stop")
async def server_stop_changed(body: kopf.Body, new: Any, memo: kopf.Memo, **_: Any) -> None:
    """The stop flag was set: cancel the job."""
    if not new:
        return
    ctx = _ctx(memo)
    await ctx.reconciler.stop(ctx.registry.observe(dict(body)))


@kopf.on.delete(*SERVERS, registry=REGISTRY)
@counted("delete")
async def server_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Cancel the job; the finalizer is released only once Slurm confirms it is gone."""
    ctx = _ctx(memo)
    await ctx.reconciler.finalize(ctx.registry.observe(dict(body)))


# ----------------------------------------------------------------------------- clusters


@kopf.on.resume(*CLUSTERS, registry=REGISTRY)
@kopf.on.create(*CLUSTERS, registry=REGISTRY)
@kopf.on.update(*CLUSTERS, field="spec", registry=REGISTRY)
@counted("cluster")
async def cluster_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Build the cluster's backend and check it at once."""
    ctx = _ctx(memo)
    try:
        rt = await ctx.clusters.load(dict(body))
    except (ClusterConfigError, KeyError) as exc:
        await ctx.kube.patch_cluster_status(body["metadata"]["name"], {
            "reachable": False, "message": f"configuration error: {exc}"})
        raise kopf.TemporaryError(str(exc), delay=30) from exc
    await ctx.check_cluster(rt)


@kopf.on.delete(*CLUSTERS, registry=REGISTRY)
async def cluster_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep an HPCCluster (and the way to cancel its jobs) while servers still use it."""
    ctx = _ctx(memo)
    name = body["metadata"]["name"]
    users = [f"{r.namespace}/{r.name}" for r in ctx.registry.by_cluster(name)]
    if users:
        raise kopf.TemporaryError(
            f"{len(users)} JupyterServers still use cluster {name}: "
            f"{', '.join(sorted(users)[:5])}", delay=10)
    await ctx.clusters.drop(name)


@kopf.daemon(*CLUSTERS, registry=REGISTRY, cancellation_timeout=5)
async def cluster_poller(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo,
                         **_: Any) -> None:
    """The one batched poller of this cluster: a single Slurm query per interval for every
    server on it, whatever their number; health check every few minutes."""
    ctx = _ctx(memo)
    name = body["metadata"]["name"]
    last_check = utcnow()
    while not stopped:
        rt = ctx.clusters.known(name)
        began, delay = time.monotonic(), 2.0
        if rt is not None:
            try:
                delay = await ctx.reconciler.poll(rt)
            except Exception:
                log.exception("poll of cluster %s failed", name)
            if (utcnow() - last_check).total_seconds() > ctx.settings.cluster_check_seconds:
                last_check = utcnow()
                await ctx.check_cluster(rt)
        wait = next_wait(delay, time.monotonic() - began)
        if rt is None:
            await stopped.wait(wait)
            continue
        if not await _submission_or_stop(rt, stopped, wait):
            continue
        # A server was submitted: look at it one fast interval after this poll began.
        rt.submitted.clear()
        soon = began + rt.spec.slurm.fast_poll_seconds - time.monotonic()
        if soon > 0:
            await stopped.wait(soon)


async def _submission_or_stop(rt: ClusterRuntime, stopped: kopf.DaemonStopped,
                              seconds: float) -> bool:
    """Sleep up to ``seconds``; True when a submission on the cluster cut it short."""
    async def stop() -> None:
        await stopped.wait(seconds)

    waiters = {asyncio.ensure_future(rt.submitted.wait()), asyncio.ensure_future(stop())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return rt.submitted.is_set() and not stopped


# ----------------------------------------------------------------------------- lifecycle


@kopf.on.login(registry=REGISTRY)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials from $KUBECONFIG, else the pod's ServiceAccount (kopf adds such fallbacks
    only to its default registry, not to our own)."""
    return kopf.login_with_kubeconfig(**kwargs) or kopf.login_with_service_account(**kwargs)


@kopf.on.startup(registry=REGISTRY)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Own prefixes for kopf's storage; quiet kopf's own Events (we post ours); the
    admission webhook server (disabled when webhook_port is 0)."""
    settings.persistence.finalizer = c.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.PREFIX, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    from .admission import configure_webhook  # here: admission.py imports this module

    configure_webhook(settings, _ctx(memo).settings)
    await _ctx(memo).start()


@kopf.on.cleanup(registry=REGISTRY)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await _ctx(memo).stop()


__all__ = ["REGISTRY", "cluster_status"]
