"""A real single-node Slurm (22.05) on 127.0.0.1: munged, slurmctld, slurmd and slurmrestd.

Everything lives under one root directory (config, keys, state, spool, logs) and uses free
ports, so it never clashes with a system Slurm or munged. Client commands need
:attr:`SlurmCluster.env` (``SLURM_CONF``); the munge socket is named in ``slurm.conf``.

The node may claim more CPUs and memory than the machine has (``SlurmdParameters=
config_overrides``), so benchmarks can schedule hundreds of small jobs on a laptop. The node
carries fake ``gpu:<type>:N`` GRES, backed by character devices ``dev/gpu<N>`` that are
copies of ``/dev/null`` (slurmd wants one device file per GPU).

Needs the Debian packages munge, slurmctld, slurmd, slurm-client, slurmrestd and
slurm-wlm-jwt-plugin (``auth/jwt``; not pulled in with ``--no-install-recommends``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import signal
import socket
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from .process import ManagedProcess, ServiceError, free_port, log_tail, run, wait_until
from .users import ensure_unix_users

REST_USER = "slurmrest"
"""Unprivileged system user slurmrestd runs as (it refuses root and SlurmUser)."""

OPENAPI_VERSION = "v0.0.38"


@dataclass(frozen=True)
class Partition:
    """One partition of the single node: its name, whether it is the default, its MaxTime."""

    name: str
    default: bool = False
    max_time: str = "1:00:00"
    """Slurm time string (``minutes``, ``H:MM:SS``, ``D-HH:MM:SS`` or ``UNLIMITED``)."""


@dataclass(frozen=True)
class SlurmConfig:
    """Everything ``slurm.conf`` and ``gres.conf`` are rendered from (pure data)."""

    nodename: str
    cpus: int
    real_memory_mb: int
    partitions: tuple[Partition, ...]
    ctld_port: int
    slurmd_port: int
    root: Path
    gpus: int = 2
    gpu_type: str = "fake"
    node_addr: str = "127.0.0.1"
    """Address of the controller and the node (a pod IP in the kind demo's mini HPC)."""

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def jwt_key_path(self) -> Path:
        return self.root / "etc" / "jwt.key"


def render_slurm_conf(cfg: SlurmConfig) -> str:
    """The text of slurm.conf for a single node named ``cfg.nodename`` at ``cfg.node_addr``."""
    r = cfg.root
    mem_per_cpu = max(1, min(1024, cfg.real_memory_mb // max(1, cfg.cpus)))
    gres = f" Gres=gpu:{cfg.gpu_type}:{cfg.gpus}" if cfg.gpus else ""
    lines = [
        "ClusterName=hpchub",
        f"SlurmctldHost={cfg.nodename}({cfg.node_addr})",
        f"SlurmctldPort={cfg.ctld_port}",
        f"SlurmdPort={cfg.slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={cfg.munge_socket}",
        "AuthAltTypes=auth/jwt",
        f"AuthAltParameters=jwt_key={cfg.jwt_key_path}",
        f"StateSaveLocation={r / 'state'}",
        f"SlurmdSpoolDir={r / 'spool'}",
        f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=batch_sched_delay=0",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        f"DefMemPerCPU={mem_per_cpu}",
        "SlurmdParameters=config_overrides",
        "ReturnToService=2",
        "KillWait=5",
        "InactiveLimit=0",
        "MinJobAge=300",
        "GresTypes=gpu" if cfg.gpus else "",
        f"NodeName={cfg.nodename} NodeAddr={cfg.node_addr} CPUs={cfg.cpus} "
        f"RealMemory={cfg.real_memory_mb}{gres} State=UNKNOWN",
    ]
    for p in cfg.partitions:
        default = "YES" if p.default else "NO"
        lines.append(
            f"PartitionName={p.name} Nodes=ALL Default={default} MaxTime={p.max_time} State=UP"
        )
    return "\n".join(line for line in lines if line) + "\n"


def render_gres_conf(cfg: SlurmConfig) -> str:
    """gres.conf declaring ``cfg.gpus`` fake GPUs backed by ``dev/gpu<N>`` device nodes.

    slurmd ignores a gpu line with only ``Count=``; it needs one device file per GPU.
    """
    if not cfg.gpus:
        return ""
    files = f"{cfg.root / 'dev' / 'gpu'}[0-{cfg.gpus - 1}]"
    return f"NodeName={cfg.nodename} Name=gpu Type={cfg.gpu_type} File={files}\n"


_RPC_LINE = re.compile(r"^\s*([A-Z][A-Z0-9_]+)\s+\(\s*\d+\)\s+count:(\d+)")


def parse_sdiag_rpc_counts(text: str) -> dict[str, int]:
    """{message type: count} from sdiag's "Remote Procedure Call statistics by message type"."""
    counts: dict[str, int] = {}
    in_section = False
    for line in text.splitlines():
        if line.startswith("Remote Procedure Call statistics by message type"):
            in_section = True
            continue
        if in_section and line.startswith("Remote Procedure Call statistics"):
            break
        match = _RPC_LINE.match(line) if in_section else None
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


def mint_slurm_token(key: bytes, user: str, lifespan: int = 300) -> str:
    """An HS256 token in slurmctld's auth/jwt format (claims ``sun``, ``iat``, ``exp``)."""
    now = int(time.time())
    return jwt.encode({"sun": user, "iat": now, "exp": now + lifespan}, key, algorithm="HS256")


def _default_memory_mb() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)) - 512


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])


class SlurmCluster:
    """munged + slurmctld + slurmd + slurmrestd for one node, under ``root``.

    Partitions: ``compute`` (default) and ``gpu`` unless given. Start with :meth:`start`,
    run client commands with :meth:`command_env`, talk REST at :attr:`rest_url` with a
    token from :meth:`mint_token`.
    """

    name = "slurm"

    def __init__(
        self,
        root: Path,
        *,
        cpus: int | None = None,
        real_memory_mb: int | None = None,
        partitions: Sequence[Partition] | None = None,
        max_time: str = "1:00:00",
        gpus: int = 2,
        gpu_type: str = "fake",
        nodename: str | None = None,
    ) -> None:
        self.root = root / "slurm"
        self.nodename = nodename or socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.real_memory_mb = real_memory_mb or _default_memory_mb()
        self.partitions: tuple[Partition, ...] = tuple(
            partitions
            or (
                Partition("compute", default=True, max_time=max_time),
                Partition("gpu", max_time=max_time),
            )
        )
        self.gpus = gpus
        self.gpu_type = gpu_type
        self.conf_path = self.root / "etc" / "slurm.conf"
        self.job_dir = self.root / "jobs"
        """World-writable (sticky) directory for job output files."""
        self._rest_port = 0
        self._config: SlurmConfig | None = None
        self._procs: dict[str, ManagedProcess] = {}

    # ----- public attributes -------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """Environment variables every Slurm client command needs."""
        return {"SLURM_CONF": str(self.conf_path)}

    def command_env(self) -> dict[str, str]:
        """``os.environ`` plus :attr:`env`: pass as ``env=`` to subprocess calls."""
        return {**os.environ, **self.env}

    @property
    def rest_url(self) -> str:
        """Base URL of slurmrestd, e.g. ``http://127.0.0.1:6820`` (after start)."""
        if not self._rest_port:
            raise ServiceError("slurm is not started")
        return f"http://127.0.0.1:{self._rest_port}"

    @property
    def jwt_key(self) -> bytes:
        """The HS256 key slurmctld verifies tokens with."""
        return self._cfg.jwt_key_path.read_bytes()

    @property
    def partition_names(self) -> list[str]:
        return [p.name for p in self.partitions]

    def mint_token(self, user: str, lifespan: int = 300) -> str:
        """A slurmrestd/slurmctld JWT for ``user`` valid ``lifespan`` seconds."""
        return mint_slurm_token(self.jwt_key, user, lifespan)

    # ----- Service protocol --------------------------------------------------------------

    def start(self) -> None:
        """Write config and keys, start the four daemons, wait until the node is idle."""
        _check_plugins()
        ensure_unix_users()
        _ensure_system_user(REST_USER)
        self._prepare()
        try:
            self._start_munged()
            self.start_controller()
            self._start_slurmd()
            self._start_rest()
        except (ServiceError, TimeoutError) as exc:
            tails = self._short_logs()
            self.stop()
            raise ServiceError(f"slurm did not start: {exc}\n{tails}") from exc
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel every job, then stop slurmrestd, slurmd, slurmctld and munged. Idempotent."""
        if self._proc_running("slurmctld"):
            with contextlib.suppress(Exception):
                self._cancel_all_jobs()
        for name in ("slurmrestd", "slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        self._kill_stray_stepds()

    def logs(self) -> dict[str, str]:
        """Tails of munged, slurmctld, slurmd and slurmrestd logs.

        slurmctld and slurmd also copy their log to stderr (``*.stderr``); those copies are
        left out unless the daemon never got as far as opening its log file.
        """
        log_dir = self.root / "log"
        if not log_dir.is_dir():
            return {}
        files = sorted(p for p in log_dir.iterdir() if p.is_file())
        names = {p.name for p in files}
        return {
            p.name: log_tail(p) for p in files if p.suffix == ".log" or f"{p.stem}.log" not in names
        }

    def _short_logs(self, lines: int = 15) -> str:
        """The last lines of every log, one block each, for a start-up error message."""
        blocks = []
        for name, text in self.logs().items():
            tail = "\n".join(text.splitlines()[-lines:])
            blocks.append(f"--- {name} ---\n{tail}")
        return "\n".join(blocks)

    # ----- fault injection ---------------------------------------------------------------

    def stop_controller(self) -> None:
        """Stop slurmctld only (jobs keep running on slurmd; state is saved)."""
        proc = self._procs.pop("slurmctld", None)
        if proc is not None:
            proc.stop()

    def start_controller(self) -> None:
        """Start slurmctld (recovering saved jobs) and wait until it answers ``scontrol ping``."""
        proc = ManagedProcess(
            name="slurmctld",
            argv=["slurmctld", "-D", "-f", str(self.conf_path)],
            log_path=self.root / "log" / "slurmctld.stderr",
            env=self.command_env(),
            cwd=self.root,  # a crash's core file stays with the stack, not the caller's cwd
            ready=self._controller_up,
            ready_timeout=60,
        )
        proc.start()
        self._procs["slurmctld"] = proc
        if self._proc_running("slurmd"):
            # Until slurmd re-registers, the restarted controller knows the GPUs only by
            # count and schedules GRES jobs without device indices (no CUDA_VISIBLE_DEVICES).
            # It would ask on its own only after ~20 s; a reconfigure makes slurmd ask now.
            run(["scontrol", "reconfigure"], env=self.command_env(), timeout=30)
            wait_until(self._node_registered, timeout=60, what="slurmd to re-register")

    def rest_request(
        self, method: str, path: str, user: str, body: Any = None, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Call ``/slurm/v0.0.38/<path>`` as ``user``; return (HTTP status, JSON body).

        ``token`` defaults to a fresh :meth:`mint_token` for ``user``. Error statuses are
        returned, not raised, so callers can assert on refusals.
        """
        headers = {
            "X-SLURM-USER-NAME": user,
            "X-SLURM-USER-TOKEN": token or self.mint_token(user, 60),
            "Content-Type": "application/json",
        }
        data = None if body is None else json.dumps(body).encode()
        url = f"{self.rest_url}/slurm/{OPENAPI_VERSION}/{path.lstrip('/')}"
        if not url.startswith("http://127.0.0.1:"):
            raise ValueError(url)
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return int(resp.status), _json_or_empty(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), _json_or_empty(exc.read())

    # ----- observations ------------------------------------------------------------------

    def scontrol_ping(self) -> bool:
        """True when slurmctld answers ``scontrol ping`` with UP."""
        return self._controller_up()

    def node_state(self) -> str:
        """The node's compact state from ``sinfo -h -o %t`` (e.g. ``idle``, ``mix``)."""
        out = run(["sinfo", "-h", "-N", "-o", "%t"], env=self.command_env(), timeout=15)
        states = out.stdout.decode().split()
        return states[0] if states else ""

    def sdiag_counts(self) -> dict[str, int]:
        """RPC counts by message type since slurmctld started (``sdiag``)."""
        out = run(["sdiag"], env=self.command_env(), timeout=15)
        return parse_sdiag_rpc_counts(out.stdout.decode(errors="replace"))

    def rest_request_count(self, endpoint: str = "") -> int:
        """Requests slurmrestd has logged so far (one "operations_router" line each),
        only those whose path ends with ``endpoint`` when given (e.g. "/jobs")."""
        path = self.root / "log" / "slurmrestd.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines()
                   if "operations_router" in line and line.rstrip().endswith(endpoint))

    # ----- internals ---------------------------------------------------------------------

    @property
    def _cfg(self) -> SlurmConfig:
        if self._config is None:
            self._config = SlurmConfig(
                nodename=self.nodename,
                cpus=self.cpus,
                real_memory_mb=self.real_memory_mb,
                partitions=self.partitions,
                ctld_port=free_port(),
                slurmd_port=free_port(),
                root=self.root,
                gpus=self.gpus,
                gpu_type=self.gpu_type,
            )
        return self._config

    def _prepare(self) -> None:
        """Create the directory tree, munge and JWT keys, slurm.conf and gres.conf."""
        cfg = self._cfg
        for sub, mode in (
            ("", 0o755),
            ("etc", 0o755),
            ("state", 0o700),
            ("spool", 0o755),
            ("run", 0o755),
            ("log", 0o755),
            ("jobs", 0o1777),
        ):
            path = self.root / sub
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
        self._write_munge_key()
        self._make_fake_gpus()
        if not cfg.jwt_key_path.exists():
            _write_secret(cfg.jwt_key_path, secrets.token_bytes(32), 0o600)
        self.conf_path.write_text(render_slurm_conf(cfg))
        (self.root / "etc" / "gres.conf").write_text(render_gres_conf(cfg))
        self._rest_port = self._rest_port or free_port()

    def _make_fake_gpus(self) -> None:
        """Character devices dev/gpu0..N-1 with /dev/null's numbers (needs a dev-capable fs)."""
        dev = self.root / "dev"
        dev.mkdir(exist_ok=True)
        null = os.stat("/dev/null").st_rdev
        for i in range(self.gpus):
            node = dev / f"gpu{i}"
            if not node.exists():
                os.mknod(node, 0o666 | stat.S_IFCHR, null)
                node.chmod(0o666)

    def _write_munge_key(self) -> None:
        munge = pwd.getpwnam("munge")
        mdir = self.root / "munge"
        mdir.mkdir(exist_ok=True)
        mdir.chmod(0o755)
        os.chown(mdir, munge.pw_uid, munge.pw_gid)
        key = mdir / "munge.key"
        if not key.exists():
            _write_secret(key, secrets.token_bytes(1024), 0o400)
            os.chown(key, munge.pw_uid, munge.pw_gid)

    def _start_munged(self) -> None:
        mdir = self.root / "munge"
        sock = self._cfg.munge_socket
        proc = ManagedProcess(
            name="munged",
            argv=[
                *_as_user("munge"),
                "munged",
                "-F",
                f"--socket={sock}",
                f"--key-file={mdir / 'munge.key'}",
                f"--pid-file={mdir / 'munged.pid'}",
                f"--seed-file={mdir / 'munged.seed'}",
                f"--log-file={mdir / 'munged.log'}",
            ],
            log_path=self.root / "log" / "munged.log",
            ready=lambda: _munge_ok(sock),
            ready_timeout=20,
        )
        proc.start()
        self._procs["munged"] = proc

    def _start_slurmd(self) -> None:
        proc = ManagedProcess(
            name="slurmd",
            argv=["slurmd", "-D", "-f", str(self.conf_path), "-N", self.nodename],
            log_path=self.root / "log" / "slurmd.stderr",
            env=self.command_env(),
            cwd=self.root,  # a crash's core file stays with the stack, not the caller's cwd
            ready=lambda: self.node_state() == "idle",
            ready_timeout=60,
        )
        proc.start()
        self._procs["slurmd"] = proc

    def _start_rest(self) -> None:
        env = {**self.command_env(), "SLURM_JWT": "daemon"}
        proc = ManagedProcess(
            name="slurmrestd",
            argv=[
                *_as_user(REST_USER),
                "slurmrestd",
                "-v",
                "-a",
                "rest_auth/jwt",
                "-s",
                f"openapi/{OPENAPI_VERSION}",
                f"127.0.0.1:{self._rest_port}",
            ],
            log_path=self.root / "log" / "slurmrestd.log",
            env=env,
            cwd=self.root,
            ready=self._rest_ping,
            ready_timeout=30,
        )
        proc.start()
        self._procs["slurmrestd"] = proc

    def _node_registered(self) -> bool:
        return self.sdiag_counts().get("MESSAGE_NODE_REGISTRATION_STATUS", 0) > 0

    def _controller_up(self) -> bool:
        res = run(["scontrol", "ping"], env=self.command_env(), check=False, timeout=15)
        return res.returncode == 0 and b"is UP" in res.stdout

    def _rest_ping(self) -> bool:
        status, body = self.rest_request("GET", "ping", "root")
        pings = body.get("pings") or []
        return status == 200 and bool(pings) and pings[0].get("ping") == "UP"

    def exited(self) -> dict[str, int | None]:
        """Daemons of this cluster that have ended on their own: name -> exit status (a
        crash shows as a negative signal number; the reason is in log/<name>.stderr)."""
        return {name: proc.proc.poll() for name, proc in self._procs.items()
                if proc.proc is not None and not proc.running}

    def _proc_running(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.running

    def _cancel_all_jobs(self) -> None:
        env = self.command_env()
        out = run(["squeue", "-h", "-o", "%i"], env=env, timeout=15).stdout.decode().split()
        if not out:
            return
        run(["scancel", *out], env=env, check=False, timeout=15)
        wait_until(
            lambda: not run(["squeue", "-h", "-o", "%i"], env=env, timeout=15).stdout.strip(),
            timeout=15,
            what="jobs to end",
        )

    def _kill_stray_stepds(self) -> None:
        """SIGKILL slurmstepds and job processes of this cluster that outlived slurmd.

        slurmstepd runs in its own session, so stopping slurmd's process group misses it.
        Both it and the job's processes carry this cluster's ``SLURM_CONF`` in their
        environment; that is how they are told apart from any other Slurm on the machine.
        """
        marker = f"SLURM_CONF={self.conf_path}".encode()
        for pid in _pids_with_env(marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _as_user(name: str) -> list[str]:
    """argv prefix dropping root to ``name`` with its own group and groups.

    ``subprocess.Popen(user=...)`` changes only the uid: the process would keep gid 0 and
    root's groups, which slurmrestd refuses ("should not be run with the root group").
    """
    return ["setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups", "--"]


def _pids_with_env(marker: bytes) -> list[int]:
    """Pids of slurmstepd or Slurm job processes whose environment holds ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        is_job = any(v.startswith(b"SLURM_JOB_ID=") for v in environ)
        if marker in environ and (comm == "slurmstepd" or is_job):
            pids.append(int(entry.name))
    return pids


def _json_or_empty(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"raw": raw.decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


def _check_plugins() -> None:
    """Fail early and clearly when a Slurm plugin package is missing."""
    dirs = [
        Path("/usr/lib/x86_64-linux-gnu/slurm-wlm"),
        Path("/usr/lib/slurm-wlm"),
        Path("/usr/lib64/slurm"),
        Path("/usr/lib/slurm"),
    ]
    dirs = [d for d in dirs if d.is_dir()]
    if dirs and not any((d / "auth_jwt.so").exists() for d in dirs):
        raise ServiceError(
            "Slurm's auth/jwt plugin is missing (Debian: apt-get install slurm-wlm-jwt-plugin)"
        )


def _write_secret(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(mode)


def _munge_ok(sock: Path) -> bool:
    if not sock.exists():
        return False
    enc = run(["munge", "-S", str(sock), "-n"], check=False, timeout=10)
    if enc.returncode != 0:
        return False
    dec = run(["unmunge", "-S", str(sock)], input=enc.stdout, check=False, timeout=10)
    return dec.returncode == 0
