"""Validating admission of JupyterServers: who may create a server for which HPC user, what
the cluster allows, and which fields may change afterwards.

The decisions are pure (``create_refusals``, ``update_refusals``); the kopf handlers only
gather their inputs and turn refusals into an :class:`kopf.AdmissionError`.

Failure policy: kopf registers these webhooks with ``failurePolicy: Fail`` (we also say
``ignore_failures=False`` explicitly) and ``persistent=True``, so they stay registered while
the operator is stopped. With the operator unreachable, creating or updating a JupyterServer
is refused ("failed calling webhook"), never admitted unchecked: the operator repeats the
cluster-policy checks before submitting (``Reconciler.start``), but it cannot repeat the
identity check (the creator is only known at admission). DELETE is not intercepted, so users
can always delete. Uninstalling the operator must delete the ValidatingWebhookConfiguration
``hpchub.io`` (see ``WEBHOOK_CONFIGURATION``).
"""

from __future__ import annotations

import asyncio
import atexit
import ipaddress
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from hpchub_api import constants as c
from hpchub_api.models import HPCClusterSpec, JupyterServerSpec

from . import policy
from .context import OperatorContext
from .handlers import REGISTRY, SERVERS
from .pki import CertificateAuthority
from .registry import parse_spec
from .settings import OperatorSettings

WEBHOOK_CONFIGURATION = c.GROUP
"""Default name of the ValidatingWebhookConfiguration kopf creates and keeps up to date
(``OperatorSettings.webhook_configuration``)."""
SUPERUSER_GROUP = "system:masters"
"""Kubernetes superusers bypass RBAC and may impersonate the hub anyway: refusing them would
add no security, so they act for any HPC user like the admin group."""
MUTABLE_FIELDS = frozenset({"stop"})
"""The only spec field that may change once a server exists (and only false -> true)."""


@dataclass(frozen=True)
class Requester:
    """Who sent the admission request (the API server's userInfo)."""

    username: str
    groups: tuple[str, ...] = ()

    @classmethod
    def from_userinfo(cls, userinfo: Mapping[str, Any]) -> Requester:
        return cls(str(userinfo.get("username") or ""),
                   tuple(str(g) for g in userinfo.get("groups") or ()))


# ----------------------------------------------------------------------------- decisions


def create_refusals(raw_spec: Mapping[str, Any], cluster_body: Mapping[str, Any] | None,
                    requester: Requester, settings: OperatorSettings,
                    active_servers_of_user: int = 0) -> list[str]:
    """Every reason to refuse creating a JupyterServer with ``raw_spec``, one message per
    field; ``cluster_body`` is the HPCCluster it names (None when there is none)."""
    spec, error = parse_spec(dict(raw_spec))
    if spec is None:
        return [error or "spec: invalid"]
    out = identity_refusals(spec, requester, settings)
    if cluster_body is None:
        return [*out, f"spec.cluster: HPCCluster {spec.cluster!r} does not exist"]
    try:
        cluster = HPCClusterSpec.model_validate(cluster_body.get("spec") or {})
    except ValidationError as exc:
        return [*out, f"spec.cluster: HPCCluster {spec.cluster!r} is misconfigured "
                      f"({exc.error_count()} errors in its spec)"]
    return out + policy.violations(spec, cluster, spec.cluster, active_servers_of_user)


def identity_refusals(spec: JupyterServerSpec, requester: Requester,
                      settings: OperatorSettings) -> list[str]:
    """A server runs code as ``spec.user``: refuse creators who may not act for that user."""
    if SUPERUSER_GROUP in requester.groups or policy.may_act_for(
            requester.username, requester.groups, spec.user, settings.admin_group,
            settings.hub_service_accounts):
        return []
    return [f"spec.user: {requester.username!r} may not create servers for HPC user "
            f"{spec.user!r} (only that user, the hub's service accounts and members of "
            f"{settings.admin_group!r} may)"]


def update_refusals(old_raw: Mapping[str, Any], new_raw: Mapping[str, Any]) -> list[str]:
    """Every refused change of an existing server's spec: all fields are fixed at creation
    except ``spec.stop``, which may only go from false to true."""
    old, new = _normalized(old_raw, new_raw)
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        if key in MUTABLE_FIELDS:
            continue
        out += [f"{path}: cannot change once the server exists; delete the server and "
                "create a new one" for path in _changed_paths(f"spec.{key}",
                                                             old.get(key), new.get(key))]
    if bool(old.get("stop")) and not bool(new.get("stop")):
        out.append("spec.stop: a stopped server cannot be restarted; create a new one")
    return out


def _normalized(old_raw: Mapping[str, Any], new_raw: Mapping[str, Any]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both specs with defaults filled in (an absent field equals its default), or both as
    they are when either does not parse (an object older than the current schema)."""
    old, _ = parse_spec(dict(old_raw))
    new, _ = parse_spec(dict(new_raw))
    if old is None or new is None:
        return dict(old_raw), dict(new_raw)
    return old.wire(), new.wire()


def _changed_paths(path: str, old: Any, new: Any) -> list[str]:
    """Wire paths of the leaves that differ (lists count as one leaf)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _changed_paths(f"{path}.{key}", old.get(key), new.get(key))
        return out
    return [] if old == new else [path]


def refusal_code(messages: Iterable[str]) -> int:
    """403 when the creator may not act for the user, else 422 like a schema violation."""
    return 403 if any("may not create servers" in m for m in messages) else 422


# ----------------------------------------------------------------------------- handlers


def _refuse(messages: list[str]) -> None:
    if messages:
        raise kopf.AdmissionError("; ".join(messages), code=refusal_code(messages))


@kopf.on.validate(*SERVERS, registry=REGISTRY, id="jupyterserver-create",
                  operations=["CREATE"], persistent=True, ignore_failures=False)
async def validate_create(body: kopf.Body, userinfo: kopf.UserInfo, memo: kopf.Memo,
                          **_: Any) -> None:
    """Refuse servers for users the creator may not act for, or against cluster policy."""
    ctx: OperatorContext = memo.ctx
    raw = body.get("spec") or {}
    cluster_name = str(raw.get("cluster") or "")
    cluster_body = await ctx.kube.get_cluster(cluster_name) if cluster_name else None
    active = ctx.registry.active_of_user(cluster_name, str(raw.get("user") or ""))
    _refuse(create_refusals(raw, cluster_body, Requester.from_userinfo(userinfo),
                            ctx.settings, active))


@kopf.on.validate(*SERVERS, registry=REGISTRY, id="jupyterserver-update",
                  operations=["UPDATE"], persistent=True, ignore_failures=False)
async def validate_update(body: kopf.Body, **kwargs: Any) -> None:
    """Refuse spec changes other than setting ``spec.stop`` (kopf passes old and new)."""
    old, new = kwargs.get("old"), kwargs.get("new")
    if old is None or new is None:
        return
    _refuse(update_refusals(old.get("spec") or {}, new.get("spec") or {}))


# ----------------------------------------------------------------------------- server


@dataclass(frozen=True)
class WebhookCertificates:
    """PEM files of the webhook's TLS endpoint and the CA the API server trusts."""

    certfile: Path
    pkeyfile: Path
    cafile: Path


def webhook_certificates(settings: OperatorSettings) -> WebhookCertificates:
    """The certificates in ``webhook_cert_dir`` (tls.crt, tls.key, ca.crt), or a fresh CA
    and server certificate for ``webhook_host`` in a private temporary directory (kopf's
    own self-signed generation does not work with OpenSSL 3)."""
    if settings.webhook_cert_dir:
        d = Path(settings.webhook_cert_dir)
        return WebhookCertificates(d / "tls.crt", d / "tls.key", d / "ca.crt")
    directory = Path(tempfile.mkdtemp(prefix="hpchub-webhook-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    ca = CertificateAuthority(directory, "hpchub-webhook-ca")
    pair = ca.issue("tls", [settings.webhook_host])
    return WebhookCertificates(pair.cert_path, pair.key_path, ca.cert_path)


def listen_address(host: str) -> str:
    """Listen on the webhook address itself when it is an IP, else on all interfaces (a DNS
    name such as a Service's resolves elsewhere)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "0.0.0.0"


async def _disabled_server(_: Any) -> AsyncIterator[Any]:
    """A webhook "server" that never serves: kopf refuses to run admission handlers with no
    server, and webhook_port 0 means the operator-side checks alone apply."""
    await asyncio.Event().wait()
    yield {}  # pragma: no cover - never reached


def configure_webhook(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    """Serve the admission webhook on ``webhook_port`` (TLS) and let kopf manage the
    ValidatingWebhookConfiguration; with port 0 nothing is served or registered."""
    if not settings.webhook_port:
        kopf_settings.admission.server = _disabled_server
        return
    certs = webhook_certificates(settings)
    kopf_settings.admission.server = kopf.WebhookServer(
        addr=listen_address(settings.webhook_host), port=settings.webhook_port,
        host=settings.webhook_host, certfile=str(certs.certfile),
        pkeyfile=str(certs.pkeyfile), cafile=str(certs.cafile))
    kopf_settings.admission.managed = settings.webhook_configuration
