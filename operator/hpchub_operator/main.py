"""Run the operator: kopf with our registry, settings and context."""

from __future__ import annotations

import asyncio
import logging

import kopf

from . import admission  # noqa: F401 - registers the admission handlers in REGISTRY
from .context import OperatorContext
from .handlers import REGISTRY
from .settings import OperatorSettings


async def run(settings: OperatorSettings, stop_flag: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop_flag``)."""
    ctx = OperatorContext(settings)
    liveness = (f"http://0.0.0.0:{settings.liveness_port}/healthz"
                if settings.liveness_port else None)
    await kopf.operator(
        registry=REGISTRY,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=True,
        liveness_endpoint=liveness,
        memo=kopf.Memo(ctx=ctx),
        stop_flag=stop_flag,
    )


def main() -> int:
    """Entry point of ``hpchub operator``."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = OperatorSettings.from_env()
    asyncio.run(run(settings))
    return 0
