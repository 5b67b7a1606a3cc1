"""The ``ssh`` and ``sudo`` backends: the Slurm commands run as the user by a CommandRunner.

``sbatch --parsable`` with every option as one ``--name=value`` argv item and the script
on stdin; ONE ``squeue --json --all`` per poll for every tagged job (its JSON is the
openapi v0.0.38 job list, read by the REST backend's parser); ``scancel`` as the job's
owner. Pure functions build argv and read output (table-tested in
``tests/unit/test_cli_parse.py``); :class:`SlurmCliBackend` only runs them.

The job's environment (the user's own tokens: ``JUPYTERHUB_API_TOKEN``,
``HPCHUB_CALLBACK_TOKEN``, ``JUPYTER_TOKEN``) appears on no command line and in no script.
It travels on stdin, in front of the script: a fixed bash program (:data:`ENV_THEN_EXEC`,
the same text for every job and user) reads ``N`` lines of ``NAME=value``, exports them
and execs ``sbatch``, which reads the rest of stdin as the script and, with
``--export=ALL``, hands its environment to the job. So the values live only in the
environment of the user's own processes (``/proc/<pid>/environ`` is private to the user
and root) and in slurmctld's state directory (root only), like an interactive ``sbatch``;
``ps`` shows only the fixed program and the scheduler options, and ``scontrol show job``
shows no environment. Variables that would steer sbatch itself (``SBATCH_*``, ``SLURM_*``)
or the shell (``BASH_ENV``, ``LD_PRELOAD``...) are refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hpchub_api import patterns

from ..runners import CommandResult, CommandRunner
from . import rest
from .base import (
    BackendError,
    ClusterFacts,
    JobInfo,
    JobRequest,
    PartitionFacts,
    SlurmRejected,
    SlurmUnavailable,
)
from .common import parsed, run_command

_UNREADABLE = "Slurm output"
"""What an unreadable answer is called in SlurmUnavailable's message."""

ENV_THEN_EXEC = """\
IFS= read -r hpchub_n || exit 97
case "$hpchub_n" in ''|*[!0-9]*) exit 97;; esac
while [ "$hpchub_n" -gt 0 ]; do
  IFS= read -r hpchub_kv || exit 97
  export -- "$hpchub_kv" || exit 97
  hpchub_n=$((hpchub_n - 1))
done
unset hpchub_n hpchub_kv
exec "$@"
"""
"""Read ``N`` then N ``NAME=value`` lines from stdin, export them, exec argv (no user data)."""
ENV_PROTOCOL_ERROR = 97

COMMENT = r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,127}$"
JOB_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
PATH = r"^/([A-Za-z0-9._+-]+/?)*$"
OUTPUT = r"^/([A-Za-z0-9._+%-]+/?)*$"
"""Output file: a path that may hold Slurm's ``%j``-style patterns."""
GRES = r"^[A-Za-z0-9_]+(:[A-Za-z0-9_.-]+)*(,[A-Za-z0-9_]+(:[A-Za-z0-9_.-]+)*)*$"
NODE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$"
FORBIDDEN_ENV = re.compile(
    r"^(SBATCH_|SLURM_|SALLOC_|SRUN_|BASH_FUNC_)|^(BASH_ENV|ENV|SHELLOPTS|BASHOPTS|IFS|PS4|"
    r"CDPATH|GLOBIGNORE|LD_PRELOAD|LD_LIBRARY_PATH|LD_AUDIT|PATH|HOME|USER|LOGNAME)$")
"""Names the job may not set: they would change how sbatch or the shell runs, not the job."""

# slurm_strerror texts (22.05) that mean "no usable answer", whatever the command.
_UNAVAILABLE = re.compile(
    r"(?i)unable to contact slurm controller|socket timed out|connection refused|"
    r"connection timed out|zero bytes were transmitted|communication connection failure|"
    r"backup controller in standby|transport endpoint is not connected|"
    r"resource temporarily unavailable|try again later|unable to create job record|"
    r"munge|authentication|slurmctld not responding|no route to host|network is unreachable")
_GONE = re.compile(r"(?i)invalid job id specified|already completing or completed|"
                   r"job has already finished")


# ----------------------------------------------------------------------------- checks


def _checked(what: str, value: str, pattern: str) -> str:
    if not patterns.matches(pattern, value):
        raise SlurmRejected(f"{what}: value not allowed: {value!r}")
    return value


def checked_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The job's variables after checking names and values (SlurmRejected names them)."""
    found = {}
    for name, value in environment.items():
        _checked("environment name", name, patterns.ENV_NAME)
        if FORBIDDEN_ENV.match(name):
            raise SlurmRejected(f"environment variable {name} is reserved for the scheduler "
                                "or the shell and cannot be set for a job")
        if len(value) > 4096 or not patterns.matches(patterns.ENV_VALUE, value):
            raise SlurmRejected(f"environment[{name}]: value not allowed (control "
                                "characters or too long)")
        found[name] = value
    return found


def environment_preamble(environment: Mapping[str, str]) -> bytes:
    """What :data:`ENV_THEN_EXEC` reads before the script: ``N`` and N ``NAME=value`` lines."""
    env = checked_environment(environment)
    lines = [str(len(env)), *(f"{name}={value}" for name, value in env.items())]
    return ("\n".join(lines) + "\n").encode()


def with_environment(argv: Sequence[str]) -> list[str]:
    """argv wrapped so that it starts with the variables read from stdin exported."""
    return ["bash", "--noprofile", "--norc", "-c", ENV_THEN_EXEC, "hpchub-env", *argv]


def slurm_prefix(slurm_conf: str | None) -> list[str]:
    """``env SLURM_CONF=...`` when the cluster's slurm.conf is not in the default place."""
    if slurm_conf is None:
        return []
    return ["env", f"SLURM_CONF={_checked('slurmConf', slurm_conf, PATH)}"]


def sbatch_argv(request: JobRequest) -> list[str]:
    """``sbatch`` with the request's options, each one ``--name=value`` item (pure).

    The ``=`` form keeps a value from ever being read as another option; every value is
    matched against its pattern again here, the last stop before the scheduler.
    """
    argv = [
        "sbatch", "--parsable", "--export=ALL", "--no-requeue",
        f"--job-name={_checked('name', request.name, JOB_NAME)}",
        f"--comment={_checked('comment', request.comment, COMMENT)}",
        f"--nodes={_count('nodes', request.nodes, patterns.MAX_NODES)}",
        f"--cpus-per-task={_count('cpusPerTask', request.cpus_per_task, patterns.MAX_CPUS)}",
        f"--time={_count('timeLimit', request.time_limit_minutes, 10**7)}",
        f"--chdir={_checked('workingDirectory', request.working_directory, PATH)}",
        f"--output={_checked('output', request.output, OUTPUT)}",
    ]
    named = {"partition": request.partition, "account": request.account,
             "qos": request.qos, "reservation": request.reservation}
    argv += [f"--{k}={_checked(k, v, patterns.SLURM_NAME)}" for k, v in named.items()
             if v is not None]
    if request.constraint is not None:
        constraint = _checked("constraint", request.constraint, patterns.CONSTRAINT)
        argv.append(f"--constraint={constraint}")
    if request.gres is not None:
        argv.append(f"--gres={_checked('gres', request.gres, GRES)}")
    if request.memory_mb is not None:
        argv.append(f"--mem={_count('memory', request.memory_mb, 10**9)}M")
    return argv


def _count(what: str, value: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise SlurmRejected(f"{what}: out of range 1..{high}: {value!r}")
    return value


def submission_stdin(request: JobRequest) -> bytes:
    """stdin of the submission: the environment lines, then the script."""
    return environment_preamble(request.environment) + request.script.encode()


# ----------------------------------------------------------------------------- output


def classify(what: str, result: CommandResult) -> BackendError | None:
    """The error a failed command stands for (None on success).

    A scheduler that did not answer is SlurmUnavailable (state unknown, never "job gone");
    anything else Slurm says on failure is a final SlurmRejected with its message.
    """
    if result.exit_status == 0:
        return None
    text = result.error_text or result.text.strip() or f"exit status {result.exit_status}"
    if result.exit_status == ENV_PROTOCOL_ERROR and not result.error_text:
        return SlurmUnavailable(f"{what}: the environment was not read (protocol error)")
    if result.exit_status in (126, 127) or (result.exit_status >= 128 and
                                            not result.error_text):
        # not found / not executable, or killed by a signal without a word (scancel's own
        # failures are 210 with Slurm's message, so a status alone proves nothing)
        return SlurmUnavailable(f"{what}: command not run (status {result.exit_status}): "
                                f"{text}")
    if _UNAVAILABLE.search(text):
        return SlurmUnavailable(f"{what}: no usable answer from Slurm: {text}")
    return SlurmRejected(f"{what}: {text}")


def classify_cancel(what: str, result: CommandResult) -> BackendError | None:
    """Like :func:`classify`; a job that is gone or already ended is not an error."""
    if result.exit_status != 0 and _GONE.search(result.error_text):
        return None
    return classify(what, result)


def parse_sbatch(stdout: str) -> str:
    """The job id printed by ``sbatch --parsable`` (``123`` or ``123;cluster``)."""
    first = stdout.strip().splitlines()[0] if stdout.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {stdout[:200]!r}")
    return job_id


def parse_json(stdout: str) -> Any:
    """The JSON document a ``--json`` command printed."""
    try:
        return json.loads(stdout)
    except ValueError as exc:
        raise ValueError(f"not JSON: {stdout[:200]!r}") from exc


def checked_json(body: Any, what: str) -> Any:
    """A ``--json`` document, or SlurmUnavailable when it carries errors.

    ``squeue --json`` exits 0 when slurmctld is down, printing ``"errors": [{"error":
    "Unspecified error", "source": "slurm_load_jobs"}]`` and an EMPTY job list: read
    naively, every job would look gone.
    """
    errors = rest.response_errors(body)
    if errors:
        detail = "; ".join(f"{e.message} ({e.errno})" for e in errors)
        raise SlurmUnavailable(f"{what}: no usable answer from Slurm: {detail}")
    return body


def parse_key_values(line: str) -> dict[str, str]:
    """``A=1 B=x y C=2`` (scontrol's one-line format) as a dict; a value may hold spaces."""
    found: dict[str, str] = {}
    key = None
    for word in line.split(" "):
        name, eq, value = word.partition("=")
        if eq and re.fullmatch(r"[A-Za-z][A-Za-z0-9_/:]*", name):
            key = name
            found[key] = value
        elif key is not None and word:
            found[key] += " " + word
    return found


def parse_partitions(text: str, gpu_types: Mapping[str, set[str]]) -> tuple[PartitionFacts,
                                                                          ...]:
    """``scontrol show partition --oneliner`` as PartitionFacts."""
    facts = []
    for line in text.splitlines():
        kv = parse_key_values(line.strip())
        if "PartitionName" not in kv:
            continue
        name = kv["PartitionName"]
        facts.append(PartitionFacts(
            name=name, state=kv.get("State", "UNKNOWN"),
            nodes=_int(kv.get("TotalNodes")), cpus=_int(kv.get("TotalCPUs")),
            memory_mb=rest._tres_memory_mb(kv.get("TRES", "")),
            gpu_types=tuple(sorted(gpu_types.get(name, set()))),
            max_time_limit=_time(kv.get("MaxTime")),
            default_time_limit=_time(kv.get("DefaultTime")),
            is_default=kv.get("Default") == "YES"))
    return tuple(facts)


def _int(raw: str | None) -> int:
    return int(raw) if raw and raw.isdigit() else 0


def _time(raw: str | None) -> str | None:
    """A scontrol time (``01:00:00``, ``1-00:00:00``; ``UNLIMITED``/``NONE``) as the REST
    backend writes it (``1:00:00``)."""
    if not raw or not patterns.matches(patterns.TIME_LIMIT, raw):
        return None
    return rest._minutes_to_time(patterns.time_limit_seconds(raw) // 60)


def parse_cluster_facts(sinfo: Any, partitions: str) -> ClusterFacts:
    """Version (and GPU types by partition) from ``sinfo --json``, partitions from scontrol."""
    gpus: dict[str, set[str]] = {}
    for node in rest._list(sinfo, "nodes"):
        for part in node.get("partitions") or []:
            gpus.setdefault(str(part), set()).update(
                rest.gres_gpu_types(str(node.get("gres") or "")))
    return ClusterFacts(version=rest.parse_version(sinfo),
                        partitions=parse_partitions(partitions, gpus))


def parse_node_address(text: str, node: str) -> str:
    """NodeAddr of ``node`` in ``scontrol show node --oneliner NAME`` output."""
    for line in text.splitlines():
        kv = parse_key_values(line.strip())
        if kv.get("NodeName") == node:
            return kv.get("NodeAddr") or kv.get("NodeHostName") or node
    raise ValueError(f"node {node!r} not in scontrol's answer")


# ----------------------------------------------------------------------------- the backend


class SlurmCliBackend:
    """SlurmBackend running the Slurm commands as the user through a CommandRunner.

    ``monitor_user`` makes the cluster-wide reads (``squeue``, ``sinfo``); it must be able
    to log in and see every job (no ``PrivateData=jobs``). ``slurm_conf`` is the path of
    slurm.conf on the login node when it is not the compiled-in default.
    """

    single_job_query = False

    def __init__(self, runner: CommandRunner, monitor_user: str, *,
                 slurm_conf: str | None = None, timeout: float = 60.0) -> None:
        if not patterns.matches(patterns.USER, monitor_user):
            raise ValueError(f"not a user name: {monitor_user!r}")
        self._runner = runner
        self._monitor_user = monitor_user
        self._prefix = slurm_prefix(slurm_conf)
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"SlurmCliBackend({self._runner!r}, monitor_user={self._monitor_user!r})"

    async def ping(self) -> ClusterFacts:
        """Check the cluster answers; return its version and partitions."""
        sinfo = await self._checked(self._monitor_user, ["sinfo", "--json"], "sinfo")
        parts = await self._checked(self._monitor_user,
                                    ["scontrol", "--oneliner", "show", "partition"],
                                    "list partitions")
        body = checked_json(parsed(_UNREADABLE, parse_json, sinfo.text), "sinfo")
        return parsed(_UNREADABLE, parse_cluster_facts, body, parts.text)

    async def submit(self, request: JobRequest) -> str:
        """Submit a batch job as ``request.user``; return the job id."""
        argv = with_environment([*self._prefix, *sbatch_argv(request)])
        what = f"submit {request.name} as {request.user}"
        result = await self._run(request.user, argv, what, submission_stdin(request),
                                 refuse_on_host_key=True)
        error = classify(what, result)
        if error is not None:
            raise error
        return parsed(_UNREADABLE, parse_sbatch, result.text)

    async def jobs(self, tag_prefix: str) -> dict[str, JobInfo]:
        """All jobs whose comment starts with ``tag_prefix``, by job id, in ONE query."""
        result = await self._checked(self._monitor_user, ["squeue", "--json", "--all"],
                                     "list jobs")
        body = checked_json(parsed(_UNREADABLE, parse_json, result.text), "list jobs")
        return parsed(_UNREADABLE, rest.parse_jobs, body, tag_prefix)

    async def job(self, job_id: str, tag_prefix: str) -> JobInfo | None:
        """``squeue --json --all --jobs ID``: one job (None once Slurm has forgotten it)."""
        if not job_id.isdigit():
            raise SlurmRejected(f"not a Slurm job id: {job_id!r}")
        try:
            result = await self._checked(self._monitor_user,
                                         ["squeue", "--json", "--all", f"--jobs={job_id}"],
                                         f"look up job {job_id}")
        except SlurmRejected:  # "Invalid job id specified": purged
            return None
        body = checked_json(parsed(_UNREADABLE, parse_json, result.text), "look up job")
        return parsed(_UNREADABLE, rest.parse_jobs, body, tag_prefix).get(job_id)

    async def cancel(self, job_id: str, user: str) -> None:
        """Cancel a job as its user; a job that is already gone is not an error."""
        if not job_id.isdigit():
            raise SlurmRejected(f"not a Slurm job id: {job_id!r}")
        what = f"cancel job {job_id} as {user}"
        result = await self._run(user, [*self._prefix, "scancel", job_id], what)
        error = classify_cancel(what, result)
        if error is not None:
            raise error

    async def node_address(self, node: str) -> str:
        """The address the node is reached at (Slurm's NodeAddr), for the readiness check."""
        if not patterns.matches(NODE_NAME, node):
            raise SlurmRejected(f"not a node name: {node!r}")
        what = f"look up node {node}"
        result = await self._run(self._monitor_user,
                                 [*self._prefix, "scontrol", "--oneliner", "show", "node",
                                  node], what)
        said = result.error_text or result.text.strip()
        if result.exit_status != 0 and re.search(r"(?i)node \S+ not found", said):
            raise SlurmRejected(f"invalid node name {node}: {said}")
        error = classify(what, result)
        if error is not None:
            raise error
        return parsed(_UNREADABLE, parse_node_address, result.text, node)

    async def close(self) -> None:
        """Release connections."""
        await self._runner.close()

    # ----- running -------------------------------------------------------------------------

    async def _checked(self, user: str, argv: list[str], what: str) -> CommandResult:
        result = await self._run(user, [*self._prefix, *argv], what)
        error = classify(what, result)
        if error is not None:
            raise error
        return result

    async def _run(self, user: str, argv: list[str], what: str, stdin: bytes | None = None,
                   *, refuse_on_host_key: bool = False) -> CommandResult:
        return await run_command(self._runner, user, argv, what, stdin=stdin,
                                 max_seconds=self._timeout,
                                 refuse_on_host_key=refuse_on_host_key)
