"""Input patterns and bounds, shared by the CRD schemas (checked by the API server, Go RE2)
and the Python models (checked again by the webhook and the operator). Each pattern is written
in the common subset of RE2 and Python ``re`` and is always matched against the whole string.
"""

from __future__ import annotations

import re
from typing import Final

# HPC login name: POSIX-portable, never starts with '-' (it would read as an option).
USER: Final = r"^[a-z_][a-z0-9_-]{0,31}$"
# Kubernetes object names (DNS-1123 label).
K8S_NAME: Final = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# JupyterHub named server ("" is the default server).
SERVER_NAME: Final = r"^([A-Za-z0-9][A-Za-z0-9._-]{0,62})?$"
# Slurm partition, account, QOS, reservation names.
SLURM_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Slurm time limit: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
TIME_LIMIT: Final = (
    r"^([0-9]{1,6}|[0-9]{1,6}:[0-5][0-9]|[0-9]{1,4}:[0-5][0-9]:[0-5][0-9]"
    r"|[0-9]{1,3}-([01]?[0-9]|2[0-3])(:[0-5][0-9](:[0-5][0-9])?)?)$"
)
# Slurm memory (MB unless suffixed).
MEMORY: Final = r"^[1-9][0-9]{0,6}[KMGT]?$"
GPU_TYPE: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
# Slurm feature expression: names joined by & | , with optional counts and brackets.
CONSTRAINT: Final = r"^[A-Za-z0-9_.]+([&|,][A-Za-z0-9_.]+)*$"
MODULE: Final = r"^[A-Za-z0-9][A-Za-z0-9._+/-]{0,127}$"
# Conda environment: a name, or an absolute prefix path.
CONDA_ENV: Final = r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63}|/[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*)$"
# Working directory: absolute, or under ~, $HOME, $WORK or $SCRATCH (expanded by the launcher).
WORKDIR: Final = r"^(~|\$HOME|\$WORK|\$SCRATCH|\$STORE)?(/[A-Za-z0-9._+-]+)*/?$"
# Directory of the job logs: below the user's home (relative) or absolute; "" for none.
LOG_DIRECTORY: Final = r"^(/?[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*)?$"
ENV_NAME: Final = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# Environment values: any printable text on one line.
ENV_VALUE: Final = r"^[^\x00-\x1f\x7f]*$"
HUB_ENV_NAME: Final = r"^JUPYTERHUB_[A-Z_]{1,48}$"
APP: Final = r"^[a-z][a-z0-9-]{0,31}$"
HOSTNAME: Final = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"
HTTP_URL: Final = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$"
REST_API_VERSION: Final = r"^v0\.0\.[0-9]{2}$"

MAX_GPUS: Final = 64
MAX_NODES: Final = 1024
MAX_CPUS: Final = 4096
MAX_ENV_VARS: Final = 64
MAX_MODULES: Final = 32
MAX_ENV_VALUE: Final = 1024


def matches(pattern: str, value: str) -> bool:
    """Whole-string match, identical in spirit to the API server's schema check."""
    return re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value) is not None


_TIME_RE = re.compile(
    r"(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?"
)


def time_limit_seconds(value: str) -> int:
    """Seconds in a Slurm time limit string (already matched against TIME_LIMIT)."""
    if not matches(TIME_LIMIT, value):
        raise ValueError(f"not a Slurm time limit: {value!r}")
    m = _TIME_RE.fullmatch(value)
    assert m is not None
    days, a, b, c = m.group("d"), int(m.group("a")), m.group("b"), m.group("c")
    if days is not None:  # D-H[:M[:S]]
        return int(days) * 86400 + a * 3600 + int(b or 0) * 60 + int(c or 0)
    if c is not None:  # H:M:S
        return a * 3600 + int(b or 0) * 60 + int(c)
    if b is not None:  # M:S
        return a * 60 + int(b)
    return a * 60  # M


_MEM_UNITS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def memory_mb(value: str) -> int:
    """Megabytes in a Slurm memory string (already matched against MEMORY)."""
    if not matches(MEMORY, value):
        raise ValueError(f"not a Slurm memory size: {value!r}")
    unit = value[-1] if value[-1].isalpha() else ""
    number = int(value[:-1] if unit else value)
    return max(1, int(number * _MEM_UNITS[unit]))
