"""Typed models of the JupyterServer and HPCCluster resources (spec and status).

Field names are camelCase on the wire (as in the CRDs) and snake_case in Python. The same
patterns as the CRD schemas apply, so an object built here is one the API server accepts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from . import patterns as p

User = Annotated[str, StringConstraints(pattern=p.USER, max_length=32)]
K8sName = Annotated[str, StringConstraints(pattern=p.K8S_NAME, max_length=63)]
ServerName = Annotated[str, StringConstraints(pattern=p.SERVER_NAME, max_length=63)]
SlurmName = Annotated[str, StringConstraints(pattern=p.SLURM_NAME, max_length=64)]
TimeLimit = Annotated[str, StringConstraints(pattern=p.TIME_LIMIT, max_length=16)]
Memory = Annotated[str, StringConstraints(pattern=p.MEMORY, max_length=8)]
GpuType = Annotated[str, StringConstraints(pattern=p.GPU_TYPE, max_length=32)]
Constraint = Annotated[str, StringConstraints(pattern=p.CONSTRAINT, max_length=128)]
Module = Annotated[str, StringConstraints(pattern=p.MODULE, max_length=128)]
CondaEnv = Annotated[str, StringConstraints(pattern=p.CONDA_ENV, max_length=256)]
WorkDir = Annotated[str, StringConstraints(pattern=p.WORKDIR, max_length=256)]
EnvName = Annotated[str, StringConstraints(pattern=p.ENV_NAME, max_length=64)]
EnvValue = Annotated[str, StringConstraints(pattern=p.ENV_VALUE, max_length=p.MAX_ENV_VALUE)]
HubEnvName = Annotated[str, StringConstraints(pattern=p.HUB_ENV_NAME, max_length=60)]
App = Annotated[str, StringConstraints(pattern=p.APP, max_length=32)]
Hostname = Annotated[str, StringConstraints(pattern=p.HOSTNAME, max_length=253)]
HttpUrl = Annotated[str, StringConstraints(pattern=p.HTTP_URL, max_length=2048)]
NodePath = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._+/-]*$", max_length=256)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class _Status(_Model):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


# ----------------------------------------------------------------------------- JupyterServer


class Target(StrEnum):
    SLURM = "slurm"
    LOGIN = "login"


class Phase(StrEnum):
    PENDING = "Pending"
    SUBMITTED = "Submitted"
    QUEUED = "Queued"
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    FAILED = "Failed"
    UNKNOWN = "Unknown"

    @property
    def final(self) -> bool:
        return self in (Phase.STOPPED, Phase.FAILED)


class SlurmRequest(_Model):
    """What to ask Slurm for (all optional: the HPCCluster's defaults fill the gaps)."""

    partition: SlurmName | None = None
    account: SlurmName | None = None
    qos: SlurmName | None = None
    reservation: SlurmName | None = None
    nodes: Annotated[int, Field(ge=1, le=p.MAX_NODES)] = 1
    cpus_per_task: Annotated[int, Field(ge=1, le=p.MAX_CPUS)] | None = None
    memory: Memory | None = None
    gpus: Annotated[int, Field(ge=0, le=p.MAX_GPUS)] = 0
    gpu_type: GpuType | None = None
    time_limit: TimeLimit | None = None
    constraint: Constraint | None = None


class LoginRequest(_Model):
    """Where to run on the login nodes (None: the operator picks one)."""

    node: Hostname | None = None


_LIST_MAP = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}


class EnvVar(_Model):
    """One environment variable (names are checked against the cluster's allow-list)."""

    name: EnvName
    value: EnvValue = ""


class HubEnvVar(_Model):
    """One JUPYTERHUB_* variable for the single-user server."""

    name: HubEnvName
    value: EnvValue = ""


class EnvironmentSpec(_Model):
    """The user's software environment on the node."""

    modules: Annotated[list[Module], Field(max_length=p.MAX_MODULES)] = []
    conda_env: CondaEnv | None = None
    working_directory: WorkDir | None = None
    variables: Annotated[list[EnvVar], Field(max_length=p.MAX_ENV_VARS,
                                             json_schema_extra=_LIST_MAP)] = []


class HubSettings(_Model):
    """Set by the spawner: how the single-user server talks to JupyterHub.

    The API token itself lives in the Secret ``token_secret`` (key ``token``), never here.
    """

    token_secret: K8sName
    environment: Annotated[list[HubEnvVar], Field(max_length=32,
                                                  json_schema_extra=_LIST_MAP)] = []


class JupyterServerSpec(_Model):
    user: User
    server_name: ServerName = ""
    target: Target = Target.SLURM
    cluster: K8sName
    slurm: SlurmRequest = SlurmRequest()
    login: LoginRequest = LoginRequest()
    environment: EnvironmentSpec = EnvironmentSpec()
    app: App = "jupyterlab"
    hub: HubSettings | None = None
    stop: bool = False


class Condition(_Status):
    """A Kubernetes-style condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    """Absent rather than empty: the 1.20 API server refuses empty strings in status."""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class JupyterServerStatus(_Status):
    phase: Phase = Phase.PENDING
    conditions: list[Condition] = []
    job_id: str | None = None
    node: str | None = None
    host: str | None = None
    port: int | None = None
    url: str | None = None
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    token_secret: str | None = None
    log_file: str | None = None
    submitted_at: str | None = None
    started_at: str | None = None
    ready_at: str | None = None
    stopped_at: str | None = None
    ends_at: str | None = None
    estimated_start: str | None = None
    last_seen_at: str | None = None
    observed_generation: int | None = None


# ----------------------------------------------------------------------------- HPCCluster


class SecretKeyRef(_Model):
    name: K8sName
    namespace: K8sName
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)]


class Backend(StrEnum):
    REST = "rest"
    SSH = "ssh"
    SUDO = "sudo"


class Isolation(StrEnum):
    OFF = "off"
    REQUIRED = "required"
    OPTIONAL = "optional"


class SlurmAccess(_Model):
    backend: Backend = Backend.REST
    rest_url: HttpUrl | None = None
    rest_api_version: Annotated[str, StringConstraints(pattern=p.REST_API_VERSION,
                                                       max_length=8)] = "v0.0.38"
    jwt_key_secret: SecretKeyRef | None = None
    monitor_user: User = "slurm"
    """The Slurm user whose short-lived token lists jobs (one query for all servers)."""
    fast_poll_seconds: Annotated[float, Field(ge=0.5, le=60)] = 2.0
    slow_poll_seconds: Annotated[float, Field(ge=1, le=600)] = 15.0
    ssh_host: Hostname | None = None
    """ssh backend: the login node the Slurm commands run on (default: the first of
    ``login.nodes``); its host key must be in ``login.knownHosts``."""
    ssh_port: Annotated[int, Field(ge=1, le=65535)] = 22
    slurm_conf: NodePath | None = None
    """ssh and sudo backends: slurm.conf on the login node when not the default path."""


class LoginNode(_Model):
    name: Hostname
    host: Hostname
    port: Annotated[int, Field(ge=1, le=65535)] = 22


class Access(StrEnum):
    """How the operator acts as the user on login nodes."""

    SSH = "ssh"
    SUDO = "sudo"


class LoginLimits(_Model):
    """Per-user limits of login-node servers (``systemd-run --user --scope`` when the node
    has a user manager, else ``prlimit``)."""

    memory: Memory | None = None
    """Memory of one server (MB unless suffixed): MemoryMax, or RLIMIT_AS with prlimit."""
    max_processes: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    """TasksMax, or RLIMIT_NPROC (all processes of the user) with prlimit."""
    servers_per_user: Annotated[int, Field(ge=1, le=64)] = 1
    """Servers one user may run at once on one login node."""


class LoginAccess(_Model):
    nodes: Annotated[list[LoginNode], Field(max_length=64)] = []
    ssh_ca_secret: SecretKeyRef | None = None
    known_hosts: Annotated[str, StringConstraints(max_length=65536)] | None = None
    access: Access = Access.SSH
    """ssh: one-shot certificates (sshCaSecret, knownHosts); sudo: the operator runs on
    the (single) login node and uses ``sudo -u``."""
    monitor_user: User | None = None
    """The account that lists servers on the login nodes (default: slurm.monitorUser)."""
    state_directory: NodePath = "/var/tmp/hpchub"  # noqa: S108 - admin-made, sticky, on the node
    """Directory on each login node, mode 1777, made by the administrator, where each
    server keeps its pid, tag and exit status (readable by the monitor user)."""
    limits: LoginLimits = LoginLimits()


class PortRange(_Model):
    min: Annotated[int, Field(ge=1024, le=65535)] = 20000
    max: Annotated[int, Field(ge=1024, le=65535)] = 60000


class LauncherSettings(_Model):
    command: Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._+/-]+$|^hpchub-launch$",
                                              max_length=512)] = "hpchub-launch"
    port_range: PortRange = PortRange()
    start_timeout_seconds: Annotated[int, Field(ge=10, le=3600)] = 300
    log_directory: Annotated[str, StringConstraints(pattern=p.LOG_DIRECTORY,
                                                    max_length=256)] = ".hpchub/logs"
    """Where each job writes its log (modules, conda, launcher, app): below the user's home
    unless absolute; "" sends it nowhere."""
    log_retention_days: Annotated[int, Field(ge=0, le=3650)] = 30
    """Job logs older than this are removed by the next job of the user (0: kept)."""


class Policy(_Model):
    """What users may ask for on this cluster. Empty lists mean "anything Slurm accepts"."""

    partitions: Annotated[list[SlurmName], Field(max_length=256)] = []
    accounts: Annotated[list[SlurmName], Field(max_length=4096)] = []
    apps: Annotated[list[App], Field(max_length=64)] = ["jupyterlab"]
    environment_variables: Annotated[list[EnvName], Field(max_length=256)] = []
    max_gpus: Annotated[int, Field(ge=0, le=p.MAX_GPUS)] = 8
    max_nodes: Annotated[int, Field(ge=1, le=p.MAX_NODES)] = 1
    max_cpus_per_task: Annotated[int, Field(ge=1, le=p.MAX_CPUS)] = 64
    max_memory: Memory | None = None
    max_time_limit: TimeLimit = "1-00:00:00"
    max_servers_per_user: Annotated[int, Field(ge=1, le=1000)] = 4


class Defaults(_Model):
    partition: SlurmName | None = None
    account: SlurmName | None = None
    time_limit: TimeLimit = "1:00:00"
    cpus_per_task: Annotated[int, Field(ge=1, le=p.MAX_CPUS)] = 1
    memory: Memory | None = None


class HPCClusterSpec(_Model):
    display_name: Annotated[str, StringConstraints(max_length=128,
                                                   pattern=p.ENV_VALUE)] | None = None
    slurm: SlurmAccess = SlurmAccess()
    login: LoginAccess = LoginAccess()
    launcher: LauncherSettings = LauncherSettings()
    policy: Policy = Policy()
    defaults: Defaults = Defaults()
    isolation: Isolation = Isolation.OFF
    hub_url: HttpUrl | None = None
    callback_url: HttpUrl | None = None


class PartitionInfo(_Status):
    name: str
    state: str = "UP"
    nodes: int = 0
    cpus: int = 0
    memory_mb: int | None = None
    gpu_types: list[str] = []
    max_time_limit: str | None = None
    default_time_limit: str | None = None
    is_default: bool = False


class HPCClusterStatus(_Status):
    reachable: bool = False
    slurm_version: str | None = None
    partitions: list[PartitionInfo] = []
    conditions: list[Condition] = []
    message: str | None = None
    last_checked_at: str | None = None
    observed_generation: int | None = None
