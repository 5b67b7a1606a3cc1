"""The ``backend`` fixture: every SlurmBackend implementation, against the session's Slurm.

The conformance suite (test_backend_conformance.py) runs once per entry of
:data:`BACKENDS`. Adding a backend is one factory function and one line in that dict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hpchub_operator.backends.base import SlurmBackend
from hpchub_operator.backends.rest import SlurmRestBackend
from hpchub_stack.slurm import OPENAPI_VERSION, REST_USER, SlurmCluster

MONITOR_USER = REST_USER
"""The unprivileged account the cluster-wide reads are made as."""


def rest_backend(slurm: SlurmCluster, **options: Any) -> SlurmRestBackend:
    """slurmrestd with per-request JWTs signed with the cluster's key."""
    return SlurmRestBackend(slurm.rest_url, OPENAPI_VERSION, slurm.jwt_key, MONITOR_USER,
                            timeout=30.0, **options)


BACKENDS: dict[str, Callable[[SlurmCluster], SlurmBackend]] = {
    "rest": rest_backend,
}


@pytest.fixture(params=list(BACKENDS))
async def backend(request: pytest.FixtureRequest, slurm: SlurmCluster
                  ) -> AsyncIterator[SlurmBackend]:
    """One SlurmBackend per parameter, closed after the test."""
    made = BACKENDS[request.param](slurm)
    try:
        yield made
    finally:
        await made.close()
