"""Build the command-line backends of an HPCCluster (``ssh``/``sudo`` Slurm, login nodes).

Pure construction from the typed spec plus the CA key bytes read from the Secret by the
caller; nothing connects here (each runner connects per operation).
"""

from __future__ import annotations

from hpchub_api import patterns
from hpchub_api.models import Access, Backend, HPCClusterSpec

from ..runners import CommandRunner, SshRunner, SudoRunner
from .cli import SlurmCliBackend
from .login import Limits, LoginNodeBackend, LoginTarget


class BackendConfigError(ValueError):
    """The HPCCluster lacks what the backend needs (the message names the fields)."""


def needs_ssh_ca(spec: HPCClusterSpec, login: bool) -> bool:
    """Whether building this backend needs the SSH user CA's private key."""
    if login:
        return spec.login.access == Access.SSH
    return spec.slurm.backend == Backend.SSH


def _ssh_runner(spec: HPCClusterSpec, host: str, port: int, ca_key: bytes | None
                ) -> SshRunner:
    if ca_key is None or spec.login.ssh_ca_secret is None:
        raise BackendConfigError("login.sshCaSecret is required to act as users over SSH")
    if not spec.login.known_hosts:
        raise BackendConfigError("login.knownHosts is required: login node host keys are "
                                 "always verified")
    try:
        return SshRunner(host, port, spec.login.known_hosts, ca_key)
    except ValueError as exc:
        raise BackendConfigError(f"cannot use the SSH settings: {exc}") from exc


def cli_backend(spec: HPCClusterSpec, ca_key: bytes | None, timeout: float
                ) -> SlurmCliBackend:
    """The ``ssh`` or ``sudo`` Slurm backend of a cluster."""
    slurm = spec.slurm
    runner: CommandRunner
    if slurm.backend == Backend.SUDO:
        runner = SudoRunner()
    elif slurm.backend == Backend.SSH:
        host, port = slurm.ssh_host, slurm.ssh_port
        if host is None:
            if not spec.login.nodes:
                raise BackendConfigError("slurm.sshHost (or a login node) is required for "
                                         "the ssh backend")
            host, port = spec.login.nodes[0].host, spec.login.nodes[0].port
        runner = _ssh_runner(spec, host, port, ca_key)
    else:
        raise BackendConfigError(f"not a command-line backend: {slurm.backend.value}")
    return SlurmCliBackend(runner, slurm.monitor_user, slurm_conf=slurm.slurm_conf,
                           timeout=timeout)


def login_backend(spec: HPCClusterSpec, ca_key: bytes | None, timeout: float
                  ) -> LoginNodeBackend:
    """The login-node backend: one runner per login node."""
    login = spec.login
    if not login.nodes:
        raise BackendConfigError("login.nodes is empty")
    if login.access == Access.SUDO and len(login.nodes) != 1:
        raise BackendConfigError("login.access sudo serves exactly one login node (the one "
                                 "the operator runs on)")
    targets = [
        LoginTarget(node.name, node.host,
                    SudoRunner() if login.access == Access.SUDO
                    else _ssh_runner(spec, node.host, node.port, ca_key))
        for node in login.nodes
    ]
    memory = None if login.limits.memory is None else \
        patterns.memory_mb(login.limits.memory) * 1024 * 1024
    limits = Limits(memory_bytes=memory, max_processes=login.limits.max_processes,
                    servers_per_user=login.limits.servers_per_user)
    return LoginNodeBackend(targets, login.monitor_user or spec.slurm.monitor_user,
                            login.state_directory, limits, timeout=timeout)
