"""The ``backend`` fixture: every SlurmBackend implementation, against the session's Slurm.

The conformance suite (test_backend_conformance.py) runs once per entry of
:data:`BACKENDS`. Adding a backend is one factory function and one line in that dict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hpchub_operator.backends.base import SlurmBackend
from hpchub_operator.backends.cli import SlurmCliBackend
from hpchub_operator.backends.rest import SlurmRestBackend
from hpchub_operator.runners import SshRunner, SudoRunner
from hpchub_stack.slurm import OPENAPI_VERSION, REST_USER, SlurmCluster
from hpchub_stack.sshd import SSHServer

MONITOR_USER = REST_USER
"""The unprivileged account the cluster-wide reads are made as."""


def rest_backend(slurm: SlurmCluster, **options: Any) -> SlurmRestBackend:
    """slurmrestd with per-request JWTs signed with the cluster's key."""
    return SlurmRestBackend(slurm.rest_url, OPENAPI_VERSION, slurm.jwt_key, MONITOR_USER,
                            timeout=30.0, **options)


CLI_MONITOR_USER = "carol"
"""The cluster-wide reads of the ssh and sudo backends need an account that can log in."""


def ssh_runner(sshd: SSHServer) -> SshRunner:
    """One-shot certificates from the stack's user CA; the host key checked."""
    return SshRunner(sshd.host, sshd.port or 22, sshd.known_hosts_line,
                     sshd.ca_private_key_path.read_bytes())


def ssh_backend(request: pytest.FixtureRequest, slurm: SlurmCluster) -> SlurmCliBackend:
    """The Slurm commands over SSH to the stack's sshd (the same machine as Slurm)."""
    sshd: SSHServer = request.getfixturevalue("sshd")
    return SlurmCliBackend(ssh_runner(sshd), CLI_MONITOR_USER,
                           slurm_conf=str(slurm.conf_path))


def sudo_backend(request: pytest.FixtureRequest, slurm: SlurmCluster) -> SlurmCliBackend:
    """The Slurm commands through ``sudo -n -u`` (the tests run as root)."""
    request.getfixturevalue("unix_users")
    return SlurmCliBackend(SudoRunner(), CLI_MONITOR_USER, slurm_conf=str(slurm.conf_path))


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, SlurmCluster], SlurmBackend]] = {
    "rest": lambda _, slurm: rest_backend(slurm),
    "ssh": ssh_backend,
    "sudo": sudo_backend,
}


@pytest.fixture(params=list(BACKENDS))
async def backend(request: pytest.FixtureRequest, slurm: SlurmCluster
                  ) -> AsyncIterator[SlurmBackend]:
    """One SlurmBackend per parameter, closed after the test."""
    made = BACKENDS[request.param](request, slurm)
    try:
        yield made
    finally:
        await made.close()
