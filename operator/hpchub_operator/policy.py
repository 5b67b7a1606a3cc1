"""What a cluster allows: pure checks of a JupyterServer spec against its HPCCluster.

The admission webhook refuses a violating object at once; the operator runs the same checks
before submitting, so a missing webhook is not a hole. Each message names the field.
"""

from __future__ import annotations

from collections.abc import Iterable

from hpchub_api import patterns as p
from hpchub_api.models import HPCClusterSpec, JupyterServerSpec, Target


def _allowed(value: str | None, allowed: Iterable[str]) -> bool:
    allowed = list(allowed)
    return value is None or not allowed or value in allowed


def violations(spec: JupyterServerSpec, cluster: HPCClusterSpec, cluster_name: str,
               active_servers_of_user: int = 0) -> list[str]:
    """Every way ``spec`` breaks the cluster's policy, one message per field."""
    pol = cluster.policy
    out: list[str] = []
    name = cluster_name
    s = spec.slurm
    partition = s.partition or cluster.defaults.partition
    if not _allowed(partition, pol.partitions):
        out.append(f"spec.slurm.partition: {partition!r} is not allowed on cluster {name} "
                   f"(allowed: {', '.join(pol.partitions)})")
    account = s.account or cluster.defaults.account
    if not _allowed(account, pol.accounts):
        out.append(f"spec.slurm.account: {account!r} is not allowed on cluster {name}")
    if spec.app not in pol.apps:
        out.append(f"spec.app: {spec.app!r} is not offered on cluster {name} "
                   f"(offered: {', '.join(pol.apps)})")
    for var in spec.environment.variables:
        if var.name not in pol.environment_variables:
            out.append(f"spec.environment.variables: {var.name!r} is not an allowed variable "
                       f"on cluster {name}")
    if s.gpus > pol.max_gpus:
        out.append(f"spec.slurm.gpus: {s.gpus} exceeds the limit of {pol.max_gpus}")
    if s.gpu_type and s.gpus == 0:
        out.append("spec.slurm.gpuType: set without requesting any GPU (spec.slurm.gpus)")
    if s.nodes > pol.max_nodes:
        out.append(f"spec.slurm.nodes: {s.nodes} exceeds the limit of {pol.max_nodes}")
    cpus = s.cpus_per_task or cluster.defaults.cpus_per_task
    if cpus > pol.max_cpus_per_task:
        out.append(f"spec.slurm.cpusPerTask: {cpus} exceeds the limit of "
                   f"{pol.max_cpus_per_task}")
    memory = s.memory or cluster.defaults.memory
    if memory and pol.max_memory and p.memory_mb(memory) > p.memory_mb(pol.max_memory):
        out.append(f"spec.slurm.memory: {memory} exceeds the limit of {pol.max_memory}")
    limit = s.time_limit or cluster.defaults.time_limit
    if p.time_limit_seconds(limit) > p.time_limit_seconds(pol.max_time_limit):
        out.append(f"spec.slurm.timeLimit: {limit} exceeds the limit of {pol.max_time_limit}")
    if p.time_limit_seconds(limit) == 0:
        out.append("spec.slurm.timeLimit: must be at least one minute")
    if spec.user in ("root", cluster.slurm.monitor_user):
        out.append(f"spec.user: servers cannot run as {spec.user!r} (a privileged account)")
    out += _target_violations(spec, cluster, name)
    if active_servers_of_user >= pol.max_servers_per_user:
        out.append(f"spec.user: {spec.user} already has {active_servers_of_user} servers on "
                   f"cluster {name} (limit {pol.max_servers_per_user})")
    return out


def _target_violations(spec: JupyterServerSpec, cluster: HPCClusterSpec, name: str
                       ) -> list[str]:
    out: list[str] = []
    if spec.target == Target.LOGIN:
        nodes = [n.name for n in cluster.login.nodes]
        if not nodes:
            out.append(f"spec.target: cluster {name} has no login nodes configured")
        elif spec.login.node and spec.login.node not in nodes:
            out.append(f"spec.login.node: {spec.login.node!r} is not a login node of {name} "
                       f"(nodes: {', '.join(nodes)})")
    elif cluster.slurm.backend.value == "rest" and not cluster.slurm.rest_url:
        out.append(f"spec.cluster: cluster {name} has no slurmrestd URL configured")
    return out


def may_act_for(creator: str, groups: Iterable[str], hpc_user: str, admin_group: str,
                hub_accounts: Iterable[str]) -> bool:
    """Creating a JupyterServer runs code as ``hpc_user``: only that user (same name in
    Kubernetes), the hub's service accounts and members of the admin group may do it."""
    return creator == hpc_user or creator in set(hub_accounts) or admin_group in set(groups)
