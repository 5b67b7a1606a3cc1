"""Typed operator settings, read once from HPCHUB_* environment variables."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class OperatorSettings(BaseModel):
    """Everything the operator process is configured with (env var = HPCHUB_ + upper name)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: list[str] = []
    """Namespaces to watch for JupyterServers; empty means the whole cluster."""
    operator_namespace: str = "hpchub"
    """Where the operator keeps its own Secrets (the callback HMAC key)."""
    callback_key_secret: str = "hpchub-callback-key"  # noqa: S105 - a Secret name
    """Secret (in operator_namespace) holding the HMAC key for readiness tokens; created if
    missing. Persistent so launchers started before a restart can still report."""
    callback_host: str = "0.0.0.0"
    """Address the readiness callback server listens on."""
    callback_port: Annotated[int, Field(ge=0, le=65535)] = 8081
    """Port of the readiness callback server (0 picks a free one)."""
    callback_url: str | None = None
    """Callback URL as seen from HPC nodes, when an HPCCluster does not set callbackUrl."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9090
    """Port serving /metrics, /healthz and /readyz (0 picks a free one)."""
    liveness_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """Port of kopf's liveness endpoint (/healthz)."""
    unknown_grace_seconds: Annotated[float, Field(ge=0)] = 20.0
    """How long Slurm may stay silent before servers are marked Unknown (seconds)."""
    cluster_check_seconds: Annotated[float, Field(gt=0)] = 60.0
    """Interval of the HPCCluster health check (ping, partitions), seconds."""
    poll_jitter: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    """Relative jitter on poll intervals so restarts do not synchronise pollers."""
    ready_check_timeout: Annotated[float, Field(gt=0)] = 5.0
    """Timeout of the HTTP check that a reported server answers (seconds)."""
    slurm_timeout: Annotated[float, Field(gt=0)] = 10.0
    """Timeout of one Slurm request (seconds)."""
    admin_group: str = "hpchub:admins"
    """Kubernetes group whose members may create servers for any HPC user."""
    hub_service_accounts: list[str] = []
    """Kubernetes users (e.g. system:serviceaccount:hpchub:hub) that act for any HPC user."""
    webhook_port: Annotated[int, Field(ge=0, le=65535)] = 0
    """Port of the admission webhook; 0 disables it (checks still run in the operator)."""
    webhook_host: str = "127.0.0.1"
    """Address the API server calls the webhook at (certificate SAN)."""
    webhook_cert_dir: str | None = None
    """Directory with tls.crt/tls.key/ca.crt for the webhook (generated if None)."""
    webhook_configuration: str = "hpchub.io"
    """Name of the Validating/MutatingWebhookConfiguration kopf keeps up to date (the Helm
    chart pre-creates it under its release's name so that uninstalling removes it)."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorSettings:
        """Settings from HPCHUB_* variables (lists are comma-separated)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(f"HPCHUB_{name.upper()}")
            if raw is None:
                continue
            if field.annotation == list[str]:
                values[name] = [v.strip() for v in raw.split(",") if v.strip()]
            else:
                values[name] = raw
        return cls.model_validate(values)
