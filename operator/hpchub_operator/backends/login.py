"""The login-node target: servers as detached processes of the user, behind SlurmBackend.

Every action is one fixed bash program, :data:`AGENT` (the same text for every user and
job; values arrive as separate argv items, the environment and the script on stdin, as in
:mod:`.cli`), run as the user (submit, cancel) or as the monitor account (list) by a
CommandRunner on the login node:

* **submit** reads the job's variables and the script from stdin, checks the per-user
  server limit, writes the script (0600) under ``<stateDirectory>/<user>/<tag>/`` and starts
  the wrapper with ``setsid -f`` (a new session and process group: it survives the SSH
  session) under ``systemd-run --user --scope`` (MemoryMax, TasksMax) when the node runs a
  user manager, else ``prlimit`` (RLIMIT_AS, RLIMIT_NPROC). The wrapper's ``argv[0]`` is
  the tag ``hpchub:<uid>``, so ``ps`` ties a process to its server; it writes its pid,
  runs the script, and on exit writes the exit status and ends its whole process group
  (jupyter-server-proxy children too). The job id is ``login:<node>:<pid>``.
* **list** prints every record of the state directory (owner, tag, pid, exit status,
  cancelled/timeout markers) and the processes whose ``argv[0]`` is a tag: one command
  per login node per poll. A record whose directory is not owned by the user it is filed
  under is ignored; a pid counts as alive only if ``ps`` shows it with that user and tag.
* **cancel** marks the record cancelled and sends TERM, then KILL after 5 s, to the
  wrapper's process group.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hpchub_api import patterns

from ..runners import CommandResult, CommandRunner
from .base import (
    ClusterFacts,
    JobInfo,
    JobRequest,
    JobState,
    SlurmRejected,
    SlurmUnavailable,
)
from .cli import COMMENT, OUTPUT, PATH, environment_preamble
from .common import parsed, run_command

LOGIN_PREFIX = "login:"
REFUSED = 3
"""Exit status of the agent when it refuses (limit reached, no state directory)."""

WRAPPER = r"""
jobdir=$1 limit=$2 output=$3
echo "$$" > "$jobdir/pid.tmp" && mv -f "$jobdir/pid.tmp" "$jobdir/pid"
date +%s > "$jobdir/start"
bash -l "$jobdir/script" </dev/null >>"$output" 2>&1 &
child=$!
if [ "$limit" -gt 0 ]; then
  ( sleep "$limit"; : > "$jobdir/timeout"; kill -TERM -- "-$$" ) >/dev/null 2>&1 &
fi
trap 'kill -TERM "$child" 2>/dev/null' TERM HUP INT
while :; do
  wait "$child"; rc=$?
  if [ "$rc" -gt 128 ] && kill -0 "$child" 2>/dev/null; then continue; fi
  break
done
echo "$rc" > "$jobdir/exit.tmp" && mv -f "$jobdir/exit.tmp" "$jobdir/exit"
trap '' TERM HUP INT
kill -TERM -- "-$$" 2>/dev/null
sleep 1
kill -KILL -- "-$$" 2>/dev/null
"""
"""The process that stands for one server: runs the script, records how it ended."""

AGENT = r"""
set -u
op=$1 state=$2
me=$(id -un)
mine="$state/$me"
alive() {  # pid tag: is pid a wrapper of this user with this tag?
  local u a0 rest
  read -r u a0 rest < <(ps -o user:32=,args= -p "$1" 2>/dev/null) || return 1
  [ "$u" = "$me" ] && [ "$a0" = "$2" ]
}
case "$op" in
submit)
  tag=$3 name=$4 max=$5 mem=$6 nproc=$7 limit=$8 workdir=$9 output=${10} wrapper=${11}
  if [ ! -d "$state" ] || [ ! -k "$state" ]; then
    echo "hpchub: state directory $state is missing or not sticky (mode 1777)" >&2
    exit 3
  fi
  IFS= read -r n || exit 97
  case "$n" in ''|*[!0-9]*) exit 97;; esac
  while [ "$n" -gt 0 ]; do IFS= read -r kv || exit 97; export -- "$kv" || exit 97; n=$((n-1)); done
  unset n kv
  umask 022
  mkdir -p -m 0755 "$mine" || exit 3
  live=0
  for d in "$mine"/*/; do
    [ -f "${d}pid" ] && [ -f "${d}tag" ] || continue
    if alive "$(<"${d}pid")" "$(<"${d}tag")"; then
      live=$((live + 1))
    elif [ -f "${d}exit" ] && [ -n "$(find "$d" -maxdepth 0 -mmin +1440)" ]; then
      rm -rf -- "$d"
    fi
  done
  if [ "$live" -ge "$max" ]; then
    echo "hpchub: $me already runs $live server(s) on $(hostname -s); the limit is $max" >&2
    exit 3
  fi
  jobdir="$mine/${tag//:/_}"
  if [ -f "$jobdir/pid" ] && alive "$(<"$jobdir/pid")" "$tag"; then
    echo "hpchub: a server tagged $tag already runs here" >&2
    exit 3
  fi
  rm -rf -- "$jobdir" && mkdir -m 0755 -- "$jobdir" || exit 3
  printf '%s\n' "$tag" > "$jobdir/tag"
  printf '%s\n' "$name" > "$jobdir/name"
  printf '%s\n' "$limit" > "$jobdir/limit"
  (umask 077; cat > "$jobdir/script") || exit 3
  [ "$output" = /dev/null ] && output="$jobdir/output.log"
  (umask 077; : >> "$output") || { echo "hpchub: cannot write $output" >&2; exit 3; }
  limiter=()
  if [ "$mem" != 0 ] || [ "$nproc" != 0 ]; then
    if command -v systemd-run >/dev/null 2>&1 &&
       systemctl --user show-environment >/dev/null 2>&1; then
      limiter=(systemd-run --user --scope --quiet --collect)
      [ "$mem" != 0 ] && limiter+=(-p "MemoryMax=$mem")
      [ "$nproc" != 0 ] && limiter+=(-p "TasksMax=$nproc")
      limiter+=(--)
      echo systemd-run > "$jobdir/limiter"
    elif command -v prlimit >/dev/null 2>&1; then
      limiter=(prlimit)
      [ "$mem" != 0 ] && limiter+=("--as=$mem")
      [ "$nproc" != 0 ] && limiter+=("--nproc=$nproc")
      limiter+=(--)
      echo prlimit > "$jobdir/limiter"
    else
      echo "hpchub: neither systemd-run --user nor prlimit here: cannot enforce limits" >&2
      exit 3
    fi
  fi
  cd -- "$workdir" 2>/dev/null || cd || exit 3
  setsid -f "${limiter[@]}" bash --noprofile --norc -c \
    'exec -a "$0" bash --noprofile --norc -c "$1" "$0" "${@:2}"' \
    "$tag" "$wrapper" "$jobdir" "$limit" "$output" </dev/null >/dev/null 2>&1 || exit 3
  for _ in $(seq 100); do [ -s "$jobdir/pid" ] && break; sleep 0.1; done
  [ -s "$jobdir/pid" ] || { echo "hpchub: the server process did not start" >&2; exit 3; }
  cat "$jobdir/pid"
  ;;
list)
  [ -d "$state" ] || exit 0
  for d in "$state"/*/*/; do
    [ -f "${d}pid" ] && [ -f "${d}tag" ] || continue
    u=${d%/*/}; u=${u##*/}
    printf 'R\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(stat -c %U -- "$d")" "$u" \
      "$(<"${d}tag")" "$(<"${d}pid")" "$(cat -- "${d}name" 2>/dev/null)" \
      "$(cat -- "${d}start" 2>/dev/null)" "$(cat -- "${d}limit" 2>/dev/null)" \
      "$(cat -- "${d}exit" 2>/dev/null)" "$([ -e "${d}cancelled" ] && echo 1)" \
      "$([ -e "${d}timeout" ] && echo 1)"
  done
  ps -eo pid=,user:32=,args= | while read -r pid user a0 _; do
    case "$a0" in hpchub:*) printf 'P\t%s\t%s\t%s\n' "$pid" "$user" "$a0";; esac
  done
  ;;
cancel)
  pid=$3
  for d in "$mine"/*/; do
    [ -f "${d}pid" ] && [ "$(<"${d}pid")" = "$pid" ] || continue
    : > "${d}cancelled"
    kill -TERM -- "-$pid" 2>/dev/null || exit 0
    for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null
    exit 0
  done
  ;;
*) exit 2;;
esac
"""
"""The login-node agent: submit, list and cancel (fixed text, no user data)."""


@dataclass(frozen=True)
class LoginTarget:
    """One login node: its name (in job ids), the host it is reached at, and a runner."""

    name: str
    host: str
    runner: CommandRunner


@dataclass(frozen=True)
class Limits:
    """Per-user limits (None: no limit)."""

    memory_bytes: int | None = None
    max_processes: int | None = None
    servers_per_user: int = 1


def agent_argv(op: str, state_directory: str, *args: str) -> list[str]:
    """The argv of one agent operation."""
    return ["bash", "--noprofile", "--norc", "-c", AGENT, "hpchub-login", op,
            state_directory, *args]


def job_id(node: str, pid: int) -> str:
    """``login:<node>:<pid>``."""
    return f"{LOGIN_PREFIX}{node}:{pid}"


def split_job_id(value: str) -> tuple[str, int]:
    """(node, pid) of a login job id (ValueError when it is not one)."""
    parts = value.split(":")
    if len(parts) != 3 or f"{parts[0]}:" != LOGIN_PREFIX or not parts[1] \
            or not parts[2].isdigit() or int(parts[2]) < 2:
        raise ValueError(f"not a login-node job id: {value!r}")
    return parts[1], int(parts[2])


def pick_node(nodes: Sequence[str], asked: str | None, comment: str) -> str:
    """The node asked for, else one chosen from the tag (spreads servers, deterministic)."""
    if asked is not None:
        if asked not in nodes:
            raise SlurmRejected(f"login node {asked!r} is not one of this cluster's "
                                f"({', '.join(nodes)})")
        return asked
    digest = int(hashlib.sha256(comment.encode()).hexdigest(), 16)
    return nodes[digest % len(nodes)]


def parse_listing(text: str, node: str, tag_prefix: str) -> dict[str, JobInfo]:
    """The agent's ``list`` output on ``node`` as JobInfos of the tagged servers (pure)."""
    running: set[tuple[int, str, str]] = set()
    records: list[list[str]] = []
    for line in text.splitlines():
        fields = line.split("\t")
        if fields[0] == "P" and len(fields) == 4 and fields[1].isdigit():
            running.add((int(fields[1]), fields[2], fields[3]))
        elif fields[0] == "R" and len(fields) == 11:
            records.append(fields[1:])
        elif line.strip():
            raise ValueError(f"unexpected line in the login-node listing: {line[:200]!r}")
    found = {}
    for owner, filed_under, tag, pid_text, name, start, limit, exit_text, cancelled, \
            timeout in records:
        if owner != filed_under or not tag.startswith(tag_prefix) or not pid_text.isdigit():
            continue  # someone else's directory under this user's name: not trusted
        pid = int(pid_text)
        info = _record(node, owner, tag, pid, name, _int(start), _int(limit),
                       _int(exit_text), bool(cancelled), bool(timeout),
                       alive=(pid, owner, tag) in running)
        found[info.job_id] = info
    return found


def _record(node: str, user: str, tag: str, pid: int, name: str, start: int | None,
            limit: int | None, exit_code: int | None, cancelled: bool, timeout: bool,
            alive: bool) -> JobInfo:
    started = None if start is None else dt.datetime.fromtimestamp(start, tz=dt.UTC)
    ends = None if started is None or not limit else started + dt.timedelta(seconds=limit)
    state, reason = JobState.RUNNING, ""
    code: int | None = None
    signal: int | None = None
    if not alive:
        code = exit_code
        if code is not None and code > 128:  # the shell's 128 + N: ended by signal N
            signal, code = code - 128, None
        if timeout:
            state, reason = JobState.TIMEOUT, "TimeLimit"
        elif cancelled:
            state = JobState.CANCELLED
        elif exit_code == 0:
            state = JobState.COMPLETED
        elif exit_code is None:
            state, reason = JobState.FAILED, "ended without recording an exit status"
        else:
            state, reason = JobState.FAILED, "NonZeroExitCode"
    return JobInfo(
        job_id=job_id(node, pid), user=user, state=state, comment=tag, name=name,
        reason=reason, nodes=node, exit_code=code,
        signal=signal, submit_time=started, start_time=started, end_time=ends,
        time_limit_minutes=None if not limit else limit // 60)


def _int(raw: str) -> int | None:
    return int(raw) if raw.strip().isdigit() else None


class LoginNodeBackend:
    """SlurmBackend for servers run as detached processes on login nodes."""

    single_job_query = False

    def __init__(self, nodes: Sequence[LoginTarget], monitor_user: str, state_directory: str,
                 limits: Limits = Limits(), *, timeout: float = 60.0) -> None:
        if not nodes:
            raise ValueError("no login nodes")
        if not patterns.matches(patterns.USER, monitor_user):
            raise ValueError(f"not a user name: {monitor_user!r}")
        if not patterns.matches(PATH, state_directory) or state_directory == "/":
            raise ValueError(f"not a state directory: {state_directory!r}")
        self._nodes: Mapping[str, LoginTarget] = {n.name: n for n in nodes}
        self._monitor_user = monitor_user
        self._state = state_directory.rstrip("/")
        self._limits = limits
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"LoginNodeBackend({list(self._nodes)!r})"

    async def ping(self) -> ClusterFacts:
        """Check every login node answers (as the monitor user)."""
        await asyncio.gather(*(self._list(node) for node in self._nodes))
        return ClusterFacts(version=f"{len(self._nodes)} login node(s)")

    async def submit(self, request: JobRequest) -> str:
        """Start the server detached on a login node as ``request.user``; return its id."""
        node = pick_node(list(self._nodes), request.login_node, request.comment)
        if not patterns.matches(COMMENT, request.comment) or \
                not request.comment.startswith("hpchub:"):
            raise SlurmRejected(f"comment: value not allowed: {request.comment!r}")
        for what, value, pattern in (("name", request.name, COMMENT),
                                     ("workingDirectory", request.working_directory, PATH),
                                     ("output", request.output, OUTPUT)):
            if not patterns.matches(pattern, value):
                raise SlurmRejected(f"{what}: value not allowed: {value!r}")
        lim = self._limits
        argv = agent_argv(
            "submit", self._state, request.comment, request.name,
            str(lim.servers_per_user), str(lim.memory_bytes or 0), str(lim.max_processes or 0),
            str(request.time_limit_minutes * 60), request.working_directory, request.output,
            WRAPPER)
        stdin = environment_preamble(request.environment) + request.script.encode()
        what = f"start {request.name} as {request.user} on login node {node}"
        result = await self._run(node, request.user, argv, what, stdin, submit=True)
        if result.exit_status == REFUSED:
            raise SlurmRejected(f"{what}: {result.error_text or 'refused'}")
        if result.exit_status != 0:
            raise SlurmUnavailable(f"{what}: status {result.exit_status}: "
                                   f"{result.error_text}")
        pid = result.text.strip()
        if not pid.isdigit():
            raise SlurmUnavailable(f"{what}: no pid in the answer: {result.text[:200]!r}")
        return job_id(node, int(pid))

    async def jobs(self, tag_prefix: str) -> dict[str, JobInfo]:
        """Every tagged server on every login node: one listing per node, run in parallel."""
        found: dict[str, JobInfo] = {}
        listings = await asyncio.gather(*(self._list(node) for node in self._nodes))
        for node, text in zip(self._nodes, listings, strict=True):
            found.update(parsed("login-node listing", parse_listing, text, node, tag_prefix))
        return found

    def _node_of(self, job_id: str) -> tuple[str, int]:
        """(login node, pid) of one of our job ids; SlurmRejected for anything else."""
        try:
            node, pid = split_job_id(job_id)
        except ValueError as exc:
            raise SlurmRejected(str(exc)) from exc
        if node not in self._nodes:
            raise SlurmRejected(f"unknown login node {node!r} in job id {job_id}")
        return node, pid

    async def job(self, job_id: str, tag_prefix: str) -> JobInfo | None:
        """One server, from the listing of its login node only."""
        node, _ = self._node_of(job_id)
        text = await self._list(node)
        return parsed("login-node listing", parse_listing, text, node, tag_prefix).get(job_id)

    async def cancel(self, job_id: str, user: str) -> None:
        """End the server's whole process group as its user; a gone server is fine."""
        node, pid = self._node_of(job_id)
        what = f"stop {job_id} as {user}"
        result = await self._run(node, user, agent_argv("cancel", self._state, str(pid)),
                                 what)
        if result.exit_status != 0:
            raise SlurmUnavailable(f"{what}: status {result.exit_status}: "
                                   f"{result.error_text}")

    async def node_address(self, node: str) -> str:
        """The configured host of a login node."""
        target = self._nodes.get(node)
        if target is None:
            raise SlurmRejected(f"invalid node name {node!r}: not a login node of this cluster")
        return target.host

    async def close(self) -> None:
        """Release the runners."""
        for target in self._nodes.values():
            await target.runner.close()

    # ----- running -------------------------------------------------------------------------

    async def _list(self, node: str) -> str:
        what = f"list servers on login node {node}"
        result = await self._run(node, self._monitor_user, agent_argv("list", self._state),
                                 what)
        if result.exit_status != 0:
            raise SlurmUnavailable(f"{what}: status {result.exit_status}: "
                                   f"{result.error_text}")
        return result.text

    async def _run(self, node: str, user: str, argv: list[str], what: str,
                   stdin: bytes | None = None, *, submit: bool = False) -> CommandResult:
        return await run_command(self._nodes[node].runner, user, argv, what, stdin=stdin,
                                 max_seconds=self._timeout, refuse_on_host_key=submit)
