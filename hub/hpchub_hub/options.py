"""The spawn form's choices and the validation of what a user asks for (pure, no I/O).

:func:`choices_for` turns the HPCClusters (spec.policy + status.partitions) and the user's
active projects into what the form offers; :func:`validate` checks submitted options against
the same choices (the server side never trusts the form) and returns the JupyterServer spec
fields, or raises :class:`OptionsError` with one message per refused field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hpchub_api import patterns as p
from hpchub_api.models import HPCClusterSpec, HPCClusterStatus, Target

FIELDS = (
    "target",
    "cluster",
    "partition",
    "account",
    "gpus",
    "gpu_type",
    "time_limit",
    "cpus_per_task",
    "modules",
    "conda_env",
    "working_directory",
    "app",
    "login_node",
)
"""Every option a user may set (form fields and user_options keys)."""


class OptionsError(ValueError):
    """Refused options; ``problems`` has one human message per field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class PartitionChoice:
    name: str
    gpu_types: tuple[str, ...] = ()
    max_time_limit: str | None = None
    is_default: bool = False


@dataclass(frozen=True)
class ClusterChoice:
    """What one cluster offers this user."""

    name: str
    display_name: str
    partitions: tuple[PartitionChoice, ...]
    accounts: tuple[str, ...]
    apps: tuple[str, ...]
    login_nodes: tuple[str, ...]
    max_gpus: int
    max_cpus_per_task: int
    max_time_limit: str
    default_time_limit: str
    default_partition: str | None
    reachable: bool = True

    def partition(self, name: str) -> PartitionChoice | None:
        return next((part for part in self.partitions if part.name == name), None)


@dataclass(frozen=True)
class Choices:
    """Everything the form may offer one user."""

    clusters: tuple[ClusterChoice, ...]
    projects: tuple[str, ...] | None
    """The user's active projects; None when unknown (no auth_state)."""
    default_cluster: str | None = None
    require_project: bool = True

    def cluster(self, name: str) -> ClusterChoice | None:
        return next((cl for cl in self.clusters if cl.name == name), None)


def _intersect(allowed: Iterable[str], offered: Sequence[str]) -> tuple[str, ...]:
    allowed = list(allowed)
    return tuple(x for x in offered if not allowed or x in allowed)


def cluster_choice(
    name: str, body: Mapping[str, Any], projects: Sequence[str] | None
) -> ClusterChoice | None:
    """What HPCCluster ``body`` offers a user in ``projects`` (None if its spec is invalid)."""
    try:
        spec = HPCClusterSpec.model_validate(body.get("spec") or {})
        status = HPCClusterStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return None
    pol = spec.policy
    seen = {part.name: part for part in status.partitions if part.state.upper() == "UP"}
    names = _intersect(pol.partitions, list(seen)) if seen else tuple(pol.partitions)
    partitions = tuple(
        PartitionChoice(
            n,
            tuple(seen[n].gpu_types) if n in seen else (),
            seen[n].max_time_limit if n in seen else None,
            (seen[n].is_default if n in seen else False) or n == spec.defaults.partition,
        )
        for n in names
    )
    accounts = _intersect(pol.accounts, list(projects or ()))
    default_partition = (
        spec.defaults.partition
        if spec.defaults.partition in names
        else (next((part.name for part in partitions if part.is_default), None))
    )
    return ClusterChoice(
        name=name,
        display_name=spec.display_name or name,
        partitions=partitions,
        accounts=accounts,
        apps=tuple(pol.apps),
        login_nodes=tuple(n.name for n in spec.login.nodes),
        max_gpus=pol.max_gpus,
        max_cpus_per_task=pol.max_cpus_per_task,
        max_time_limit=pol.max_time_limit,
        default_time_limit=spec.defaults.time_limit,
        default_partition=default_partition,
        reachable=status.reachable,
    )


def choices_for(
    clusters: Iterable[Mapping[str, Any]],
    projects: Sequence[str] | None,
    default_cluster: str | None = None,
    allowed_clusters: Sequence[str] = (),
    require_project: bool = True,
) -> Choices:
    """The form's choices for one user from the HPCCluster objects (sorted by name)."""
    out = []
    for body in sorted(clusters, key=lambda b: str(b["metadata"]["name"])):
        name = str(body["metadata"]["name"])
        if allowed_clusters and name not in allowed_clusters:
            continue
        choice = cluster_choice(name, body, projects)
        if choice is not None:
            out.append(choice)
    return Choices(
        tuple(out), None if projects is None else tuple(projects), default_cluster, require_project
    )


# ----------------------------------------------------------------------------- parsing


def from_form(formdata: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The submitted form as single strings (a repeated field is refused, unknown ignored)."""
    out: dict[str, str] = {}
    problems = []
    for key in FIELDS:
        values = list(formdata.get(key) or ())
        if len(values) > 1:
            problems.append(f"{key}: given more than once")
        elif values and values[0].strip() != "":
            out[key] = values[0].strip()
    if problems:
        raise OptionsError(problems)
    return out


_INT = re.compile(r"^[0-9]{1,4}$")


def _int(raw: Any, what: str, problems: list[str]) -> int | None:
    if isinstance(raw, bool):
        problems.append(f"{what}: must be a whole number")
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and _INT.match(raw):
        return int(raw)
    problems.append(f"{what}: must be a whole number")
    return None


def _text(raw: Any, what: str, pattern: str, problems: list[str], hint: str = "") -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not p.matches(pattern, raw):
        shown = raw if isinstance(raw, str) and len(raw) <= 64 else "(value)"
        problems.append(f"{what}: {shown!r} is not allowed{hint or ' (letters, digits, . _ -)'}")
        return None
    return raw


def _modules(raw: Any, problems: list[str]) -> list[str]:
    items = raw.split() if isinstance(raw, str) else raw
    if items is None:
        return []
    if not isinstance(items, list):
        problems.append("modules: must be a list of module names")
        return []
    if len(items) > p.MAX_MODULES:
        problems.append(f"modules: at most {p.MAX_MODULES}")
        return []
    out = []
    for item in items:
        ok = _text(
            item, "modules", p.MODULE, problems, " (module names: letters, digits, . _ + / -)"
        )
        if ok:
            out.append(ok)
    return out


# ----------------------------------------------------------------------------- validation


def validate(options: Mapping[str, Any], choices: Choices) -> dict[str, Any]:
    """The JupyterServer spec fields (target, cluster, slurm, login, environment, app) for
    ``options``, or OptionsError naming every refused field."""
    problems: list[str] = []
    unknown = sorted(set(options) - set(FIELDS))
    if unknown:
        problems.append(f"unknown option(s): {', '.join(map(str, unknown))}")
    cluster_name = (
        options.get("cluster")
        or choices.default_cluster
        or (choices.clusters[0].name if len(choices.clusters) == 1 else None)
    )
    cluster = choices.cluster(cluster_name) if isinstance(cluster_name, str) else None
    if cluster is None:
        offered = ", ".join(cl.name for cl in choices.clusters) or "none"
        raise OptionsError(
            [*problems, f"cluster: {cluster_name!r} is not offered (offered: {offered})"]
        )
    target_raw = options.get("target") or Target.SLURM.value
    if target_raw not in (Target.SLURM.value, Target.LOGIN.value):
        problems.append(
            f"target: must be {Target.SLURM.value!r} (compute node) or "
            f"{Target.LOGIN.value!r} (login node)"
        )
        target = Target.SLURM
    else:
        target = Target(target_raw)
    spec: dict[str, Any] = {"target": target.value, "cluster": cluster.name}
    app = options.get("app") or (cluster.apps[0] if cluster.apps else "jupyterlab")
    if app not in cluster.apps:
        problems.append(
            f"app: {app!r} is not offered on {cluster.name} (offered: {', '.join(cluster.apps)})"
        )
    spec["app"] = app
    spec["slurm"] = _slurm(options, cluster, choices, target, problems)
    if target == Target.LOGIN:
        spec["login"] = _login(options, cluster, problems)
    environment = _environment(options, problems)
    if environment:
        spec["environment"] = environment
    if problems:
        raise OptionsError(problems)
    return spec


def _slurm(
    options: Mapping[str, Any],
    cluster: ClusterChoice,
    choices: Choices,
    target: Target,
    problems: list[str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    account = options.get("account")
    if choices.projects is not None and (account or choices.require_project):
        if not cluster.accounts:
            problems.append(f"account: you have no active project allowed on {cluster.name}")
        elif account not in cluster.accounts:
            shown = account if isinstance(account, str) and len(account) <= 64 else "(value)"
            problems.append(
                f"account: {shown!r} is not one of your active projects "
                f"({', '.join(cluster.accounts)})"
                if account
                else f"account: choose one of your projects ({', '.join(cluster.accounts)})"
            )
        else:
            out["account"] = account
    elif account:
        problems.append("account: your projects are unknown (log in again)")
    if target == Target.LOGIN:
        return out
    partition_name = options.get("partition") or cluster.default_partition
    partition = cluster.partition(partition_name) if isinstance(partition_name, str) else None
    if partition is None:
        shown = (
            partition_name
            if isinstance(partition_name, str) and len(partition_name) <= 64
            else "(value)"
        )
        problems.append(
            f"partition: {shown!r} is not allowed on {cluster.name} (allowed: "
            f"{', '.join(pt.name for pt in cluster.partitions) or 'none'})"
        )
    else:
        out["partition"] = partition.name
    gpus = _int(options.get("gpus", 0), "gpus", problems)
    if gpus is not None:
        if gpus > cluster.max_gpus:
            problems.append(f"gpus: {gpus} exceeds the limit of {cluster.max_gpus}")
        elif gpus:
            out["gpus"] = gpus
    gpu_type = _text(options.get("gpu_type"), "gpu_type", p.GPU_TYPE, problems)
    if gpu_type:
        if not gpus:
            problems.append("gpu_type: set without asking for any GPU")
        elif partition is not None and gpu_type not in partition.gpu_types:
            problems.append(
                f"gpu_type: {gpu_type!r} is not available in partition "
                f"{partition.name} (available: "
                f"{', '.join(partition.gpu_types) or 'none'})"
            )
        else:
            out["gpuType"] = gpu_type
    cpus = options.get("cpus_per_task")
    if cpus not in (None, ""):
        n = _int(cpus, "cpus_per_task", problems)
        if n is not None and not 1 <= n <= cluster.max_cpus_per_task:
            problems.append(f"cpus_per_task: must be between 1 and {cluster.max_cpus_per_task}")
        elif n is not None:
            out["cpusPerTask"] = n
    limit = _text(
        options.get("time_limit"),
        "time_limit",
        p.TIME_LIMIT,
        problems,
        " (Slurm time: minutes, H:MM:SS or D-HH:MM)",
    )
    if limit:
        seconds = p.time_limit_seconds(limit)
        if seconds < 60:
            problems.append("time_limit: must be at least one minute")
        elif seconds > p.time_limit_seconds(cluster.max_time_limit):
            problems.append(f"time_limit: {limit} exceeds the limit of {cluster.max_time_limit}")
        else:
            out["timeLimit"] = limit
    return out


def _login(
    options: Mapping[str, Any], cluster: ClusterChoice, problems: list[str]
) -> dict[str, Any]:
    if not cluster.login_nodes:
        problems.append(f"target: {cluster.name} has no login nodes")
        return {}
    node = options.get("login_node")
    if node in (None, ""):
        return {}
    if node not in cluster.login_nodes:
        problems.append(
            f"login_node: not a login node of {cluster.name} "
            f"(nodes: {', '.join(cluster.login_nodes)})"
        )
        return {}
    return {"node": node}


def _environment(options: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    modules = _modules(options.get("modules"), problems)
    if modules:
        out["modules"] = modules
    conda = _text(
        options.get("conda_env"),
        "conda_env",
        p.CONDA_ENV,
        problems,
        " (an environment name or an absolute path)",
    )
    if conda:
        out["condaEnv"] = conda
    workdir = _text(
        options.get("working_directory"),
        "working_directory",
        p.WORKDIR,
        problems,
        " (an absolute path, or one under ~, $HOME, $WORK, $SCRATCH)",
    )
    if workdir:
        out["workingDirectory"] = workdir
    return out
