"""The Slurm job for a JupyterServer: a validated JobRequest and its batch script (pure).

Scheduler options travel as JSON (slurmrestd) or argv (sbatch), never as ``#SBATCH`` lines,
and the script is rendered from a fixed template in which every substituted value is
shell-quoted: :class:`QuotedTemplate` has no way to insert a raw value. Each value is also
matched again against :mod:`hpchub_api.patterns` here, although the CRD schema and the
admission webhook have checked it before: this module is the last line before a shell.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping

from hpchub_api import constants, patterns
from hpchub_api.models import HPCClusterSpec, JupyterServerSpec

from .backends.base import JobRequest

UID: str = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"
"""Kubernetes object uids (RFC 4122 text); they end up in the job comment."""
LAUNCHER: str = r"^(/[A-Za-z0-9._+-]+)+$|^hpchub-launch$"
MAX_JOB_NAME = 64
MAX_ENV_TOTAL = 256
SLURM_CWD_FALLBACK = "/tmp"  # noqa: S108 - exists on every node; the script cds on

_WORKDIR_BASES = {"~": "HOME", "$HOME": "HOME", "$WORK": "WORK", "$SCRATCH": "SCRATCH",
                  "$STORE": "STORE"}
_WORKDIR_PREFIX = re.compile(r"^(~|\$HOME|\$WORK|\$SCRATCH|\$STORE)(?=/|$)")


class QuotedTemplate(string.Template):
    """``$name`` placeholders whose values are always shell-quoted; no raw substitution.

    A string becomes one quoted word; a list or tuple becomes its items as quoted words
    separated by spaces (for a bash array). Missing placeholders raise KeyError.
    """

    def render(self, values: Mapping[str, str | list[str] | tuple[str, ...]]) -> str:
        """The template with every placeholder replaced by its quoted value."""
        return self.substitute({name: _quote(value) for name, value in values.items()})


def _quote(value: str | list[str] | tuple[str, ...]) -> str:
    if isinstance(value, str):
        return shlex.quote(value)
    return " ".join(shlex.quote(item) for item in value)


# The whole script. Values appear only as $placeholders (quoted by QuotedTemplate); shell
# variables of the script itself are written ${like_this} with $$ for a literal dollar.
SCRIPT = QuotedTemplate("""\
#!/bin/bash -l
# Started by hpchub (a login shell: the site profile sets PATH, `module` and conda).
# Scheduler options are not in this file; every value below is a quoted literal.
set -u
# Jobs submitted through slurmrestd start with an almost empty environment.
if [ -z "$${HOME:-}" ]; then
  HOME=$$(getent passwd "$$(id -u)" | cut -d: -f6)
  export HOME
fi
export USER="$${USER:-$$(id -un)}" LOGNAME="$${LOGNAME:-$$(id -un)}"

# The job's log, in a directory of the user's (below HOME unless absolute), made here:
# everything from now on (modules, conda, the launcher and the app) goes there.
hpchub_log_dir=$log_dir
hpchub_log_name=$log_name
hpchub_log_days=$log_days
if [ -n "$${hpchub_log_dir}" ]; then
  case "$${hpchub_log_dir}" in /*) ;; *) hpchub_log_dir="$${HOME}/$${hpchub_log_dir}" ;; esac
  hpchub_log="$${hpchub_log_dir}/$${hpchub_log_name}-$${SLURM_JOB_ID:-$$$$}.log"
  if mkdir -p -m 0700 -- "$${hpchub_log_dir}" 2>/dev/null && : >>"$${hpchub_log}" 2>/dev/null
  then
    exec >>"$${hpchub_log}" 2>&1
    echo "hpchub: $${hpchub_log_name} (job $${SLURM_JOB_ID:-none}) on $$(hostname)," \
      "$$(date '+%F %T %z')"
    if [ "$${hpchub_log_days}" -gt 0 ]; then
      find "$${hpchub_log_dir}" -maxdepth 1 -type f -name 'hpchub-*.log' \
        -mtime "+$${hpchub_log_days}" -delete 2>/dev/null
    fi
  fi
fi
hpchub_launcher=$launcher

# The job has started: tell the operator now, in the background while modules and conda
# load, so that it reads Slurm at once rather than at its next poll (a hint: Slurm decides).
# Over plain HTTP bash sends it itself (no process to start on a node busy starting the
# job; printf is a builtin, so the token is on no command line); otherwise, or when that
# fails, the launcher sends it (and retries).
hpchub_report_started() {
  local uid="$${HPCHUB_SERVER_UID:-}" url="$${HPCHUB_CALLBACK_URL:-}" host port path answer=""
  local request='POST %s/v1/servers/%s/report HTTP/1.0\\r\\nHost: %s:%s\\r\\n'
  request+='Authorization: Bearer %s\\r\\nContent-Type: application/json\\r\\n'
  request+='Content-Length: 17\\r\\n\\r\\n{"started": true}'
  if [[ "$${uid}" =~ ^[A-Za-z0-9][A-Za-z0-9-]{0,63}$$ &&
        "$${url}" =~ ^http://([A-Za-z0-9.-]+)(:([0-9]{1,5}))?(/[A-Za-z0-9._~/-]*)?$$ ]]; then
    host="$${BASH_REMATCH[1]}" port="$${BASH_REMATCH[3]:-80}" path="$${BASH_REMATCH[4]%/}"
    if { exec 3<>"/dev/tcp/$${host}/$${port}"; } 2>/dev/null; then
      # shellcheck disable=SC2059 # the format is the literal above
      printf "$${request}" "$${path}" "$${uid}" "$${host}" "$${port}" \\
        "$${HPCHUB_CALLBACK_TOKEN:-}" >&3
      IFS= read -r -t 10 answer <&3
      exec 3<&-
      [[ "$${answer}" =~ ^HTTP/1\\.[01]\\ 2[0-9][0-9] ]] && return 0
    fi
  fi
  exec "$${hpchub_launcher}" --report-started
}
hpchub_report_started &

hpchub_modules=($modules)
hpchub_conda_env=$conda_env
hpchub_workdir_base=$workdir_base
hpchub_workdir_path=$workdir_path

# A failure before the launcher runs is still reported to the operator, with its reason.
hpchub_fail() {
  echo "hpchub: $$1" >&2
  exec "$${hpchub_launcher}" --report-failure "$$1"
}

if [ "$${#hpchub_modules[@]}" -gt 0 ]; then
  if type module >/dev/null 2>&1; then
    for hpchub_module in "$${hpchub_modules[@]}"; do
      module load "$${hpchub_module}" || hpchub_fail "module load $${hpchub_module} failed"
    done
  else
    echo "hpchub: no 'module' command here; not loading: $${hpchub_modules[*]}" >&2
  fi
fi

if [ -n "$${hpchub_conda_env}" ]; then
  type conda >/dev/null 2>&1 ||
    hpchub_fail "conda environment $${hpchub_conda_env} requested but no conda on this node"
  eval "$$(conda shell.bash hook)" || hpchub_fail "conda shell hook failed"
  conda activate "$${hpchub_conda_env}" ||
    hpchub_fail "conda activate $${hpchub_conda_env} failed"
fi

hpchub_dir="$${hpchub_workdir_path}"
if [ -n "$${hpchub_workdir_base}" ]; then
  [ -n "$${!hpchub_workdir_base:-}" ] ||
    hpchub_fail "\\$$$${hpchub_workdir_base} is not set on this node"
  hpchub_dir="$${!hpchub_workdir_base}$${hpchub_workdir_path}"
fi
cd -- "$${hpchub_dir}" || hpchub_fail "cannot enter the working directory $${hpchub_dir}"

exec "$${hpchub_launcher}"
""")


# ----------------------------------------------------------------------------- checks


def checked(field: str, value: str, pattern: str, max_length: int = 256) -> str:
    """``value`` if it matches ``pattern`` (whole string) and fits; else ValueError naming
    the field."""
    if len(value) > max_length or not patterns.matches(pattern, value):
        raise ValueError(f"{field}: value not allowed: {value!r}")
    return value


def _optional(field: str, value: str | None, pattern: str, max_length: int = 64) -> str | None:
    return None if value is None else checked(field, value, pattern, max_length)


def split_workdir(workdir: str | None) -> tuple[str, str]:
    """(environment variable, path below it) of a working directory.

    ``~/x`` and ``$HOME/x`` -> ``("HOME", "/x")``; ``/abs`` -> ``("", "/abs")``; None means
    the home directory, and so does "".
    """
    if not workdir:
        return "HOME", ""
    checked("environment.workingDirectory", workdir, patterns.WORKDIR)
    match = _WORKDIR_PREFIX.match(workdir)
    if match is None:
        if not workdir.startswith("/"):
            raise ValueError(f"environment.workingDirectory: value not allowed: {workdir!r}")
        return "", workdir
    return _WORKDIR_BASES[match.group(1)], workdir[match.end():]


# ----------------------------------------------------------------------------- script


def render_script(spec: JupyterServerSpec, cluster: HPCClusterSpec,
                  log_name: str = constants.JOB_NAME_PREFIX + "server") -> str:
    """The batch script: open its log, send the start hint, load modules, activate conda,
    cd, exec the launcher.
    ``log_name`` is the log file's name before ``-<job id>.log``."""
    env = spec.environment
    modules = [
        checked(f"environment.modules[{i}]", module, patterns.MODULE, 128)
        for i, module in enumerate(env.modules)
    ]
    if len(modules) > patterns.MAX_MODULES:
        raise ValueError(f"environment.modules: more than {patterns.MAX_MODULES}")
    conda_env = _optional("environment.condaEnv", env.conda_env, patterns.CONDA_ENV, 256)
    base, path = split_workdir(env.working_directory)
    launcher = checked("launcher.command", cluster.launcher.command, LAUNCHER, 512)
    log_dir = checked("launcher.logDirectory", cluster.launcher.log_directory,
                      patterns.LOG_DIRECTORY)
    return SCRIPT.render({
        "log_dir": log_dir,
        "log_name": checked("log name", log_name, r"^hpchub-[A-Za-z0-9._-]{1,64}$", 71),
        "log_days": str(_count("launcher.logRetentionDays",
                               cluster.launcher.log_retention_days, 0, 3650)),
        "modules": modules,
        "conda_env": conda_env or "",
        "workdir_base": base,
        "workdir_path": path,
        "launcher": launcher,
    })


# ----------------------------------------------------------------------------- request


def log_file(cluster: HPCClusterSpec, job_name: str, job_id: str) -> str | None:
    """Where the job script writes the log of Slurm job ``job_id`` (``~`` for the home
    directory), None when the cluster keeps no logs."""
    directory = cluster.launcher.log_directory
    if not directory:
        return None
    base = directory if directory.startswith("/") else f"~/{directory}"
    return f"{base}/{job_name}-{job_id}.log"


def job_name(name: str) -> str:
    """``hpchub-<name>`` with anything outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return f"{constants.JOB_NAME_PREFIX}{safe}"[:MAX_JOB_NAME]


def gres(gpus: int, gpu_type: str | None) -> str | None:
    """The GRES string for ``gpus`` GPUs (``gpu:a100:2``, ``gpu:2``), None for no GPUs."""
    if gpus <= 0:
        return None
    if not 0 < gpus <= patterns.MAX_GPUS:
        raise ValueError(f"slurm.gpus: out of range: {gpus}")
    if gpu_type is None:
        return f"gpu:{gpus}"
    return f"gpu:{checked('slurm.gpuType', gpu_type, patterns.GPU_TYPE, 32)}:{gpus}"


def checked_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environment`` with every name and value matched against the patterns."""
    if len(environment) > MAX_ENV_TOTAL:
        raise ValueError(f"environment: more than {MAX_ENV_TOTAL} variables")
    return {
        checked("environment name", name, patterns.ENV_NAME, 64): checked(
            f"environment[{name}]", value, patterns.ENV_VALUE, 4096)
        for name, value in environment.items()
    }


def _count(field: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{field}: out of range {low}..{high}: {value!r}")
    return value


def build_request(spec: JupyterServerSpec, cluster: HPCClusterSpec, uid: str, name: str,
                  environment: Mapping[str, str]) -> JobRequest:
    """The job for one JupyterServer: the spec's request, gaps filled from the cluster's
    defaults, every value checked again."""
    req, defaults = spec.slurm, cluster.defaults
    time_limit = checked("slurm.timeLimit", req.time_limit or defaults.time_limit,
                         patterns.TIME_LIMIT, 16)
    memory = _optional("slurm.memory", req.memory or defaults.memory, patterns.MEMORY, 8)
    base, path = split_workdir(spec.environment.working_directory)
    return JobRequest(
        user=checked("user", spec.user, patterns.USER, 32),
        name=job_name(checked("name", name, patterns.K8S_NAME, 63)),
        comment=constants.job_comment(checked("uid", uid, UID, 64)),
        script=render_script(spec, cluster, job_name(name)),
        partition=_optional("slurm.partition", req.partition or defaults.partition,
                            patterns.SLURM_NAME),
        account=_optional("slurm.account", req.account or defaults.account,
                          patterns.SLURM_NAME),
        qos=_optional("slurm.qos", req.qos, patterns.SLURM_NAME),
        reservation=_optional("slurm.reservation", req.reservation, patterns.SLURM_NAME),
        nodes=_count("slurm.nodes", req.nodes, 1, patterns.MAX_NODES),
        cpus_per_task=_count("slurm.cpusPerTask", req.cpus_per_task or defaults.cpus_per_task,
                             1, patterns.MAX_CPUS),
        memory_mb=None if memory is None else patterns.memory_mb(memory),
        gres=gres(req.gpus, req.gpu_type),
        time_limit_minutes=max(1, -(-patterns.time_limit_seconds(time_limit) // 60)),
        constraint=_optional("slurm.constraint", req.constraint, patterns.CONSTRAINT, 128),
        working_directory=path if not base else SLURM_CWD_FALLBACK,
        environment=checked_environment(environment),
        login_node=_optional("login.node", spec.login.node, patterns.HOSTNAME, 253),
    )
