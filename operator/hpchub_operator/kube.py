"""The operator's side effects on Kubernetes, behind one small class.

Only this module talks to the API server for the operator (kopf talks for itself).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from hpchub_api import constants as c


class SecretNotOwned(Exception):
    """A Secret we would use exists but was not created for this object."""


class KubeGateway:
    """Status patches, Events, Secrets."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    @classmethod
    async def connect(cls) -> KubeGateway:
        """In-cluster configuration if present, else $KUBECONFIG / ~/.kube/config."""
        try:
            config.load_incluster_config()
        except config.ConfigException:
            await config.load_kube_config()
        return cls(client.ApiClient())

    async def close(self) -> None:
        await self._api.close()

    async def patch_server_status(self, namespace: str, name: str,
                                  patch: dict[str, Any]) -> None:
        """Merge-patch ``.status`` of a JupyterServer (nulls remove fields)."""
        await self._custom.patch_namespaced_custom_object_status(
            c.GROUP, c.VERSION, namespace, c.SERVER_PLURAL, name, {"status": patch},
            _content_type="application/merge-patch+json")

    async def patch_cluster_status(self, name: str, status: dict[str, Any]) -> None:
        """Merge-patch ``.status`` of an HPCCluster."""
        await self._custom.patch_cluster_custom_object_status(
            c.GROUP, c.VERSION, c.CLUSTER_PLURAL, name, {"status": status},
            _content_type="application/merge-patch+json")

    async def get_cluster(self, name: str) -> dict[str, Any] | None:
        """An HPCCluster object, or None."""
        try:
            obj: dict[str, Any] = await self._custom.get_cluster_custom_object(
                c.GROUP, c.VERSION, c.CLUSTER_PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def event(self, obj: dict[str, Any], reason: str, message: str,
                    type_: str = "Normal", at: dt.datetime | None = None) -> None:
        """Post a Kubernetes Event about ``obj``, which happened ``at`` (default: now; best
        effort is the caller's choice)."""
        meta = obj["metadata"]
        now = at or dt.datetime.now(dt.UTC)
        ns = meta.get("namespace") or "default"
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=ns),
            involved_object=client.V1ObjectReference(
                api_version=obj.get("apiVersion", c.API_VERSION), kind=obj.get("kind"),
                name=meta["name"], namespace=meta.get("namespace"), uid=meta.get("uid")),
            reason=reason, message=message[:1024], type=type_,
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component="hpchub-operator"),
            reporting_component="hpchub.io/operator", reporting_instance="hpchub-operator",
        )
        await self._core.create_namespaced_event(ns, body)

    async def secret_value(self, namespace: str, name: str, key: str) -> bytes:
        """One key of a Secret, decoded (raises KeyError if the key is missing)."""
        sec = await self._core.read_namespaced_secret(name, namespace)
        data = sec.data or {}
        if key not in data:
            raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key])

    async def ensure_secret(self, namespace: str, name: str, key: str,
                            owner: dict[str, Any] | None = None,
                            labels: dict[str, str] | None = None) -> bytes:
        """Read ``key`` of Secret ``name``, creating it with 32 random bytes if missing.

        With an ``owner``, an existing Secret is used only if that owner owns it: a Secret
        planted by someone else must never become a server's token."""
        try:
            sec = await self._core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        else:
            if owner is not None and not any(
                    ref.uid == owner["metadata"]["uid"]
                    for ref in (sec.metadata.owner_references or [])):
                raise SecretNotOwned(f"Secret {namespace}/{name} exists and does not belong "
                                     f"to {owner['kind']} {owner['metadata']['name']}")
            data = sec.data or {}
            if key not in data:
                raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
            return base64.b64decode(data[key])
        value = secrets.token_hex(32).encode()
        refs = None
        if owner is not None:
            refs = [client.V1OwnerReference(
                api_version=owner["apiVersion"], kind=owner["kind"],
                name=owner["metadata"]["name"], uid=owner["metadata"]["uid"],
                controller=True, block_owner_deletion=False)]
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace, owner_references=refs,
                                         labels=labels or {}),
            type="Opaque", data={key: base64.b64encode(value).decode()})
        try:
            await self._core.create_namespaced_secret(namespace, body)
        except ApiException as exc:
            if exc.status != 409:  # created concurrently: read theirs
                raise
            return await self.secret_value(namespace, name, key)
        return value
