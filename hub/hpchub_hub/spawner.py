"""JupyterHub spawner that asks the hpchub operator for a server by creating a JupyterServer.

``start`` creates a Secret with the server's hub API token and the JupyterServer, then waits
(on the shared watch cache, never polling the API server) until the operator reports it
Running and returns the URL the operator verified. ``progress`` turns phase changes and the
CR's Kubernetes Events into spawn-page messages; ``poll`` and ``stop`` act on the CR. Hub
state holds only the CR's name, namespace and uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from jupyterhub.spawner import Spawner
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web
from traitlets import Bool, Float, List, Unicode, default

from hpchub_api import constants as c
from hpchub_api.models import Phase

from . import form, options, reflector, status
from .options import OptionsError

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
TOKEN_KEY = "token"  # noqa: S105 - the key name in the Secret, not a secret


class SpawnRefused(web.HTTPError):
    """The request was refused (by our validation, the webhook or the operator). JupyterHub
    shows ``jupyterhub_message`` as is: on the form, the spawn page and in API errors."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(status_code, "%s", message, reason="Refused")
        self.jupyterhub_message = message

    def __str__(self) -> str:
        return str(self.jupyterhub_message)


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or b"{}").get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


async def _render_form(spawner: JupyterServerSpawner) -> str:
    """``options_form`` is called with the spawner (not bound)."""
    return form.render(await spawner.choices(), spawner.user_options or None)


async def _check_user_options(spawner: JupyterServerSpawner, user_options: Any) -> None:
    """``apply_user_options``: refuse bad options (HTTP 400) before anything is created."""
    if not isinstance(user_options, Mapping):
        raise SpawnRefused("Refused: user_options must be an object")
    await spawner.spec_fields(user_options)


class JupyterServerSpawner(Spawner):  # type: ignore[misc]
    """Spawn single-user servers as JupyterServer resources of the hpchub operator."""

    namespace = Unicode(
        "default",
        config=True,
        help="Namespace of the JupyterServers and token Secrets this hub creates "
        "(the hub's own namespace in the chart).",
    )
    default_cluster = Unicode(
        "",
        config=True,
        help="HPCCluster preselected in the form and used when user_options name none "
        "(empty: the only cluster, if there is exactly one).",
    )
    allowed_clusters = List(
        Unicode(),
        config=True,
        help="HPCClusters this hub offers (empty: every HPCCluster it can see).",
    )
    projects_key = Unicode(
        "projects",
        config=True,
        help="auth_state key holding the list of the user's active projects (Slurm "
        "accounts); only these are offered and accepted.",
    )
    require_project = Bool(
        True,
        config=True,
        help="Refuse a spawn without a project when the user's projects are known.",
    )
    object_prefix = Unicode(
        "jupyter",
        config=True,
        help="Prefix of JupyterServer names: <prefix>-<user>[--<server>] (plus a hash when "
        "escaping was needed).",
    )
    delete_timeout = Float(
        120.0,
        config=True,
        help="Seconds stop() waits for the operator to cancel the job and release the CR.",
    )
    delete_propagation = Unicode(
        "Background",
        config=True,
        help="propagationPolicy of the CR deletion. 'Foreground' makes the API server keep "
        "the CR until the garbage collector removed its dependents (the token Secret); "
        "it needs kube-controller-manager. The spawner waits until the CR is gone "
        "either way (the operator's finalizer holds it until the job is cancelled), and "
        "deletes the token Secret itself.",
    )
    cache_timeout = Float(
        30.0,
        config=True,
        help="Seconds to wait for the first listing of the watch caches before giving up.",
    )

    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        # HPC queues: the job may wait for nodes. JupyterHub stops the server at timeout.
        return 900

    @default("options_form")
    def _default_options_form(self) -> Any:
        return _render_form

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return _check_user_options

    # hub state: only the CR's identity
    cr_name = Unicode("")
    cr_namespace = Unicode("")
    cr_uid = Unicode("")

    # -- state ------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.cr_uid:
            state.update(name=self.cr_name, namespace=self.cr_namespace, uid=self.cr_uid)
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self.cr_name = str(state.get("name") or "")
        self.cr_namespace = str(state.get("namespace") or "")
        self.cr_uid = str(state.get("uid") or "")

    def clear_state(self) -> None:
        super().clear_state()
        self.cr_name = self.cr_namespace = self.cr_uid = ""

    # -- options ----------------------------------------------------------------------------

    async def user_projects(self) -> list[str] | None:
        """The user's active projects from auth_state (None when unknown)."""
        auth_state = await self.user.get_auth_state()
        if not auth_state or self.projects_key not in auth_state:
            return None
        return [str(x) for x in auth_state.get(self.projects_key) or []]

    async def choices(self) -> options.Choices:
        clusters = reflector.clusters()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(clusters.synced.wait(), self.cache_timeout)
        return options.choices_for(
            clusters.items(),
            await self.user_projects(),
            self.default_cluster or None,
            self.allowed_clusters,
            self.require_project,
        )

    async def options_from_form(self, formdata: Mapping[str, list[str]]) -> dict[str, Any]:
        """Validate the form at once: a refusal shows on the form with the reason (400)."""
        try:
            raw = options.from_form(formdata)
            options.validate(raw, await self.choices())
        except OptionsError as exc:
            raise SpawnRefused(str(exc)) from exc
        return raw

    async def spec_fields(self, user_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The validated spec fields for user_options (from the form or the REST API)."""
        wanted = self.user_options if user_options is None else user_options
        try:
            return options.validate(wanted or {}, await self.choices())
        except OptionsError as exc:
            raise SpawnRefused(f"Refused: {exc}") from exc

    # -- kubernetes -------------------------------------------------------------------------

    def _labels(self) -> dict[str, str]:
        labels = {c.LABEL_MANAGED_BY: "jupyterhub", c.LABEL_COMPONENT: "singleuser-server"}
        for key, value in ((c.LABEL_USER, self.user.name), (c.LABEL_SERVER_NAME, self.name)):
            if value and _LABEL_VALUE.match(value):
                labels[key] = value
        return labels

    def manifest(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The JupyterServer to create."""
        spec: dict[str, Any] = {"user": self.user.name, **fields}
        if self.name:
            spec["serverName"] = self.name
        spec["hub"] = {
            "tokenSecret": status.secret_name(name),
            "environment": status.hub_environment(self.get_env()),
        }
        return {
            "apiVersion": c.API_VERSION,
            "kind": c.SERVER_KIND,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": self._labels(),
                "annotations": {
                    f"{c.GROUP}/hub-user": self.user.name,
                    f"{c.GROUP}/hub-server-name": self.name,
                },
            },
            "spec": spec,
        }

    async def _apis(self) -> tuple[client.CustomObjectsApi, client.CoreV1Api]:
        api = await reflector.api_client()
        return client.CustomObjectsApi(api), client.CoreV1Api(api)

    async def _ensure_absent(self, name: str) -> None:
        """Remove a previous CR of the same name (left over, failed or being deleted)."""
        servers = reflector.servers(self.namespace)
        old = servers.get(name)
        if old is None:
            return
        self.log.info(
            "Deleting previous JupyterServer %s/%s (phase %s)",
            self.namespace,
            name,
            status.phase_of(old).value,
        )
        await self._delete(name, old["metadata"]["uid"])

    async def _write_secret(self, name: str) -> None:
        _, core = await self._apis()
        body = {
            "metadata": {
                "name": status.secret_name(name),
                "namespace": self.namespace,
                "labels": self._labels(),
            },
            "type": "Opaque",
            "stringData": {TOKEN_KEY: self.api_token},
        }
        try:
            await core.create_namespaced_secret(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            await core.delete_namespaced_secret(status.secret_name(name), self.namespace)
            await core.create_namespaced_secret(self.namespace, body)

    async def _adopt_secret(self, name: str, uid: str) -> None:
        """Make the CR own its token Secret (garbage-collected with it)."""
        _, core = await self._apis()
        owner = {
            "apiVersion": c.API_VERSION,
            "kind": c.SERVER_KIND,
            "name": name,
            "uid": uid,
            "blockOwnerDeletion": False,
            "controller": False,
        }
        try:
            await core.patch_namespaced_secret(
                status.secret_name(name),
                self.namespace,
                {"metadata": {"ownerReferences": [owner]}},
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            self.log.warning(
                "Could not set the owner of %s: %s", status.secret_name(name), _api_message(exc)
            )

    async def _delete_secret(self, name: str) -> None:
        _, core = await self._apis()
        try:
            await core.delete_namespaced_secret(status.secret_name(name), self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                self.log.warning(
                    "Could not delete %s: %s", status.secret_name(name), _api_message(exc)
                )

    async def _delete(self, name: str, uid: str) -> None:
        """Delete the CR (this uid only) and wait until the operator released it."""
        custom, _ = await self._apis()
        namespace = self.cr_namespace or self.namespace
        try:
            await custom.delete_namespaced_custom_object(
                c.GROUP,
                c.VERSION,
                namespace,
                c.SERVER_PLURAL,
                name,
                body={"preconditions": {"uid": uid}, "propagationPolicy": self.delete_propagation},
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
        servers = reflector.servers(namespace)

        def gone() -> bool:
            obj = servers.get(name)
            return obj is None or obj["metadata"]["uid"] != uid

        if not await servers.wait_for(gone, self.delete_timeout):
            raise TimeoutError(
                f"JupyterServer {namespace}/{name} still exists after "
                f"{self.delete_timeout:.0f}s (operator down?)"
            )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> str:
        fields = await self.spec_fields()
        servers = reflector.servers(self.namespace)
        reflector.server_events(self.namespace)
        await asyncio.wait_for(servers.synced.wait(), self.cache_timeout)
        name = status.object_name(self.user.name, self.name, self.object_prefix)
        await self._ensure_absent(name)
        # Not clear_state(): JupyterHub's would also drop the API token made for this spawn.
        self.cr_name = self.cr_namespace = self.cr_uid = ""
        await self._write_secret(name)
        custom, _ = await self._apis()
        try:
            created = await custom.create_namespaced_custom_object(
                c.GROUP, c.VERSION, self.namespace, c.SERVER_PLURAL, self.manifest(name, fields)
            )
        except ApiException as exc:
            await self._delete_secret(name)
            if exc.status is not None and 400 <= exc.status < 500:
                raise SpawnRefused(f"Refused: {_api_message(exc)}") from exc
            raise
        uid = str(created["metadata"]["uid"])
        self.cr_name, self.cr_namespace, self.cr_uid = name, self.namespace, uid
        await self._adopt_secret(name, uid)
        self.log.info(
            "Created JupyterServer %s/%s (uid %s) for %s", self.namespace, name, uid, self._log_name
        )
        obj = await self._wait_started(name, uid)
        if obj is None:
            raise SpawnRefused("The server was deleted while starting", 500)
        if status.phase_of(obj) != Phase.RUNNING or status.deleting(obj):
            raise SpawnRefused(status.failure_message(obj), 500)
        return str(obj["status"]["url"])

    async def _wait_started(self, name: str, uid: str) -> dict[str, Any] | None:
        """Wait (on the cache) until the CR is Running with a URL, final, or gone."""
        servers = reflector.servers(self.namespace)
        seen = False

        def settled() -> bool:
            nonlocal seen
            obj = servers.get(name)
            mine = obj is not None and obj["metadata"]["uid"] == uid
            if not mine:
                return seen
            seen = True
            assert obj is not None
            phase = status.phase_of(obj)
            url = (obj.get("status") or {}).get("url")
            return (phase == Phase.RUNNING and bool(url)) or phase.final or status.deleting(obj)

        await servers.wait_for(settled, None)
        obj = servers.get(name)
        return obj if obj is not None and obj["metadata"]["uid"] == uid else None

    async def poll(self) -> int | None:
        if not self.cr_uid:
            return 0
        servers = reflector.servers(self.cr_namespace or self.namespace)
        await asyncio.wait_for(servers.synced.wait(), self.cache_timeout)
        obj = servers.get(self.cr_name)
        if obj is not None and obj["metadata"]["uid"] != self.cr_uid:
            obj = None
        return status.exit_status(obj)

    async def stop(self, now: bool = False) -> None:
        if not self.cr_uid:
            return
        servers = reflector.servers(self.cr_namespace or self.namespace)
        await asyncio.wait_for(servers.synced.wait(), self.cache_timeout)
        self.log.info(
            "Deleting JupyterServer %s/%s for %s", self.cr_namespace, self.cr_name, self._log_name
        )
        await self._delete(self.cr_name, self.cr_uid)
        await self._delete_secret(self.cr_name)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        servers = reflector.servers(self.namespace)
        events = reflector.server_events(self.namespace)
        last_phase: Phase | None = None
        seen: set[tuple[str, int]] = set()
        while True:
            obj = servers.get(self.cr_name) if self.cr_uid else None
            if obj is not None and obj["metadata"]["uid"] == self.cr_uid:
                phase = status.phase_of(obj)
                pct = status.progress_of(phase)
                mine = sorted(
                    (
                        e
                        for e in events.items()
                        if (e.get("involvedObject") or {}).get("uid") == self.cr_uid
                        and status.event_key(e) not in seen
                    ),
                    key=status.event_time,
                )
                for event in mine:
                    seen.add(status.event_key(event))
                    yield {"progress": min(pct, 95), "message": status.event_message(event)}
                if phase != last_phase:
                    last_phase = phase
                    yield {"progress": pct, "message": status.phase_message(obj)}
                if phase == Phase.RUNNING or phase.final:
                    return
            await _first_change(servers, events, limit=5.0)


async def _first_change(*caches: reflector.Reflector, limit: float) -> None:
    """Return when any cache changes (or after ``limit`` seconds)."""
    tasks = [asyncio.ensure_future(cache.changed(limit)) for cache in caches]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
