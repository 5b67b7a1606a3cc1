"""One shared list+watch cache per hub process, per kind of object (as kubespawner's
``reflector.py``): every spawner reads from it, none polls the API server.

A :class:`Reflector` lists its objects once, then watches from the list's resourceVersion and
keeps a dict of the current objects (plain JSON dicts, camelCase keys) by name. On any watch
error, including 410 Gone, it lists again. Waiters are woken on every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.watch import Watch

from hpchub_api import constants as c

log = logging.getLogger("hpchub.reflector")

Obj = dict[str, Any]
ListCall = Callable[..., Awaitable[Any]]

_api_client: ApiClient | None = None
_api_client_lock = asyncio.Lock()


async def api_client() -> ApiClient:
    """The hub's one Kubernetes client: $KUBECONFIG when set, else the pod's ServiceAccount."""
    global _api_client
    async with _api_client_lock:
        if _api_client is None:
            if os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
                await config.load_kube_config()
            else:
                config.load_incluster_config()
            _api_client = ApiClient()
        return _api_client


@dataclass(frozen=True)
class Kind:
    """What a reflector follows: one resource kind, in one namespace or cluster-wide."""

    plural: str
    namespace: str | None
    field_selector: str | None = None


class Reflector:
    """A list+watch cache of one kind of object; see the module docstring."""

    def __init__(self, kind: Kind, watch_timeout: int = 300, retry_delay: float = 2.0) -> None:
        self.kind = kind
        self.watch_timeout = watch_timeout
        self.retry_delay = retry_delay
        self.objects: dict[str, Obj] = {}
        self.synced = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._api: ApiClient | None = None

    # -- reading ----------------------------------------------------------------------------

    def get(self, name: str) -> Obj | None:
        """The cached object named ``name`` (None when it does not exist)."""
        return self.objects.get(name)

    def items(self) -> list[Obj]:
        """Every cached object."""
        return list(self.objects.values())

    async def wait_for(self, predicate: Callable[[], bool], limit: float | None) -> bool:
        """Wait until ``predicate()`` holds after a change (or now); False after ``limit``
        seconds (None: no limit)."""
        await self.synced.wait()

        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        try:
            await asyncio.wait_for(_wait(), limit)
        except TimeoutError:
            return False
        return True

    async def changed(self, limit: float | None) -> None:
        """Return at the next change, or after ``limit`` seconds."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), limit)

    # -- running ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the list+watch loop in the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        self._api = await api_client()
        while True:
            try:
                version = await self._list()
                while True:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                log.warning("%s: %s %s, listing again", self.kind.plural, exc.status, exc.reason)
            except Exception:
                log.exception("%s: watch failed, listing again", self.kind.plural)
            await asyncio.sleep(self.retry_delay)

    def _call(self, watch: bool) -> tuple[ListCall, dict[str, Any]]:
        """The list function and its arguments (shared by list and watch)."""
        assert self._api is not None
        kind = self.kind
        kwargs: dict[str, Any] = {}
        if kind.field_selector:
            kwargs["field_selector"] = kind.field_selector
        if kind.plural == "events":
            core = client.CoreV1Api(self._api)
            assert kind.namespace is not None
            return core.list_namespaced_event, {"namespace": kind.namespace, **kwargs}
        custom = client.CustomObjectsApi(self._api)
        args = {"group": c.GROUP, "version": c.VERSION, "plural": kind.plural, **kwargs}
        if kind.namespace is None:
            return custom.list_cluster_custom_object, args
        return custom.list_namespaced_custom_object, {"namespace": kind.namespace, **args}

    def _plain(self, obj: Any) -> Obj:
        """A JSON dict with camelCase keys, whatever the client returned."""
        if isinstance(obj, Mapping):
            return dict(obj)
        assert self._api is not None
        out: Obj = self._api.sanitize_for_serialization(obj)
        return out

    async def _list(self) -> str:
        func, kwargs = self._call(watch=False)
        result = self._plain(await func(**kwargs))
        objects = {o["metadata"]["name"]: o for o in map(self._plain, result.get("items") or [])}
        await self._replace(objects)
        return str(result["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str:
        func, kwargs = self._call(watch=True)
        watch = Watch()
        async with watch.stream(
            func,
            resource_version=version,
            timeout_seconds=self.watch_timeout,
            allow_watch_bookmarks=True,
            **kwargs,
        ) as stream:
            async for event in stream:
                kind, obj = event["type"], self._plain(event.get("raw_object") or event["object"])
                if kind == "ERROR":
                    raise ApiException(status=obj.get("code", 500), reason=obj.get("message"))
                version = obj["metadata"].get("resourceVersion") or version
                if kind == "BOOKMARK":
                    continue
                await self._apply(kind, obj)
        return version

    async def _replace(self, objects: dict[str, Obj]) -> None:
        async with self._changed:
            self.objects = objects
            self.synced.set()
            self._changed.notify_all()

    async def _apply(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        async with self._changed:
            if kind == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = obj
            self._changed.notify_all()


_REFLECTORS: dict[Kind, Reflector] = {}


def shared(kind: Kind) -> Reflector:
    """The process-wide reflector for ``kind``, started on first use."""
    reflector = _REFLECTORS.get(kind)
    if reflector is None:
        reflector = _REFLECTORS[kind] = Reflector(kind)
    reflector.start()
    return reflector


def servers(namespace: str) -> Reflector:
    """JupyterServers of the hub's namespace."""
    return shared(Kind(c.SERVER_PLURAL, namespace))


def clusters() -> Reflector:
    """Every HPCCluster (cluster-scoped)."""
    return shared(Kind(c.CLUSTER_PLURAL, None))


def server_events(namespace: str) -> Reflector:
    """Kubernetes Events about JupyterServers of the hub's namespace."""
    return shared(Kind("events", namespace, f"involvedObject.kind={c.SERVER_KIND}"))
