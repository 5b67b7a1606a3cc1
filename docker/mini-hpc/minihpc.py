"""Entrypoint of the mini-HPC image: a one-node Slurm cluster (munge, slurmctld, slurmd,
slurmrestd with JWT), slapd with the demo users and sshd trusting a user CA, listening on the
pod's address so that the hpchub chart in kind can use it.

The configuration files come from the project's stack code (hpchub_stack: slurm.conf,
slapd.conf and its LDIF, sshd_config, the demo users), rendered for ``--addr``. Secrets come
from files mounted from Kubernetes Secrets: the Slurm JWT key, the LDAP reader password and
the SSH user CA's public key.

  minihpc.py render --root DIR --addr IP ...   write every file under DIR and exit
  minihpc.py run    --root DIR --addr IP ...   render, then start and supervise the daemons

``render`` writes files only (the demo users must exist: the LDIF carries their
uid numbers); tests/integration/test_minihpc.py runs it on the host and checks the files
with the daemons' own config checkers.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hpchub_stack.ldap import LdapDirectory, hash_password
from hpchub_stack.slurm import (
    OPENAPI_VERSION,
    REST_USER,
    Partition,
    SlurmConfig,
    render_slurm_conf,
)
from hpchub_stack.sshd import SSHD, SSHServer
from hpchub_stack.users import ensure_unix_users

SLURMRESTD_PORT = 6820
LDAP_PORT = 389
SSH_PORT = 22


@dataclass(frozen=True)
class Options:
    root: Path
    addr: str
    nodename: str
    cpus: int
    memory_mb: int
    jwt_key_file: Path | None
    ldap_reader_password_file: Path | None
    ssh_ca_pub_file: Path | None


def slurm_config(opts: Options) -> SlurmConfig:
    return SlurmConfig(
        nodename=opts.nodename, cpus=opts.cpus, real_memory_mb=opts.memory_mb,
        partitions=(Partition("compute", default=True, max_time="4:00:00"),),
        ctld_port=6817, slurmd_port=6818, root=opts.root / "slurm", gpus=0,
        node_addr=opts.addr)


def _secret(path: Path | None, size: int) -> bytes:
    """The mounted secret, or a fresh random one (a standalone `docker run`)."""
    return path.read_bytes().strip() if path else secrets.token_urlsafe(size).encode()


def render(opts: Options) -> dict[str, Path]:
    """Write every configuration file and key under ``opts.root``; return them by name."""
    cfg = slurm_config(opts)
    slurm = cfg.root
    for sub in ("etc", "state", "spool", "run", "log", "munge", "jobs"):
        (slurm / sub).mkdir(parents=True, exist_ok=True)
    (slurm / "jobs").chmod(0o1777)
    files = {"slurm.conf": slurm / "etc" / "slurm.conf", "jwt.key": cfg.jwt_key_path,
             "munge.key": slurm / "etc" / "munge.key"}
    files["slurm.conf"].write_text(render_slurm_conf(cfg))
    _write(cfg.jwt_key_path, _secret(opts.jwt_key_file, 32), 0o600)
    _write(files["munge.key"], secrets.token_bytes(1024), 0o400)

    ldap = LdapDirectory(opts.root, port=LDAP_PORT)
    reader = _secret(opts.ldap_reader_password_file, 16).decode()
    ldap.reader_password = reader
    for sub in ("data", "run"):
        (ldap.dir / sub).mkdir(parents=True, exist_ok=True)
    files["slapd.conf"] = ldap.dir / "slapd.conf"
    files["slapd.conf"].write_text(ldap.slapd_conf(hash_password(ldap.admin_password)))
    files["init.ldif"] = ldap.dir / "init.ldif"
    files["init.ldif"].write_text(ldap.initial_ldif())

    sshd = SSHServer(opts.root, port=SSH_PORT)
    sshd.dir.mkdir(parents=True, exist_ok=True)
    files["sshd_config"] = sshd.config_path
    # The stack's sshd listens on 127.0.0.1; here it serves the pod's address.
    files["sshd_config"].write_text(
        sshd.sshd_config().replace(f"ListenAddress {sshd.host}", f"ListenAddress {opts.addr}"))
    ca_pub = sshd.dir / "user_ca.pub"
    ca_pub.write_text(opts.ssh_ca_pub_file.read_text() if opts.ssh_ca_pub_file else "")
    files["user_ca.pub"] = ca_pub
    files["ssh_host_key"] = sshd.host_key_path
    if not sshd.host_key_path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mini-hpc",
                        "-f", str(sshd.host_key_path)], check=True)
    return files


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(mode)


def daemons(opts: Options, files: dict[str, Path]) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, argv, extra env) of every daemon, in start order, all in the foreground."""
    cfg = slurm_config(opts)
    env = {"SLURM_CONF": str(files["slurm.conf"])}
    return [
        ("munged", ["runuser", "-u", "munge", "--", "munged", "--foreground",
                    f"--key-file={files['munge.key']}", f"--socket={cfg.munge_socket}",
                    f"--pid-file={cfg.root / 'run' / 'munged.pid'}",
                    f"--log-file={cfg.root / 'log' / 'munged.log'}",
                    f"--seed-file={cfg.root / 'munge' / 'seed'}"], {}),
        ("slurmctld", ["slurmctld", "-D", "-i"], env),
        ("slurmd", ["slurmd", "-D"], env),
        ("slurmrestd", ["runuser", "-u", REST_USER, "--", "slurmrestd", "-a", "rest_auth/jwt",
                        "-s", f"openapi/{OPENAPI_VERSION}", f"0.0.0.0:{SLURMRESTD_PORT}"],
         {**env, "SLURM_JWT": "daemon"}),
        ("slapd", ["slapd", "-f", str(files["slapd.conf"]), "-h", f"ldap://0.0.0.0:{LDAP_PORT}/",
                   "-u", "openldap", "-g", "openldap", "-d", "0"], {}),
        ("sshd", [SSHD, "-D", "-e", "-f", str(files["sshd_config"])], {}),
    ]


def ensure_users() -> None:
    """The demo users (hpchub_stack.users) and slurmrestd's account; needs root."""
    ensure_unix_users()
    if subprocess.run(["id", REST_USER], capture_output=True, check=False).returncode:
        subprocess.run(["useradd", "--system", "--no-create-home", REST_USER], check=True)


def prepare_system(opts: Options, files: dict[str, Path]) -> None:
    """Root-only steps after rendering: ownerships, the LDAP database, sshd's privsep dir."""
    cfg = slurm_config(opts)
    for path in (files["munge.key"], cfg.root / "munge", cfg.root / "log", cfg.root / "run"):
        os.chown(path, _uid("munge"), _gid("munge"))
    ldap_dir = files["slapd.conf"].parent
    subprocess.run(["slapadd", "-f", str(files["slapd.conf"]), "-l", str(files["init.ldif"])],
                   check=True)
    for path in (ldap_dir / "data", *(ldap_dir / "data").iterdir(), ldap_dir / "run"):
        os.chown(path, _uid("openldap"), _gid("openldap"))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def _gid(name: str) -> int:
    import grp

    return grp.getgrnam(name).gr_gid


def supervise(procs: list[tuple[str, subprocess.Popen[bytes]]]) -> int:
    """Wait until one daemon exits or SIGTERM arrives; then stop them all (reverse order)."""
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    code = 0
    while not stopping:
        for name, proc in procs:
            if proc.poll() is not None:
                print(f"mini-hpc: {name} exited with {proc.returncode}", file=sys.stderr)
                stopping, code = True, 1
        time.sleep(0.5)
    for _, proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for _, proc in reversed(procs):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return code


def parse(argv: list[str] | None = None) -> tuple[str, Options]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["render", "run"])
    p.add_argument("--root", type=Path, default=Path("/var/lib/mini-hpc"))
    p.add_argument("--addr", default=os.environ.get("POD_IP") or "127.0.0.1")
    p.add_argument("--nodename", default=socket.gethostname().split(".")[0])
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    p.add_argument("--memory-mb", type=int, default=2048)
    p.add_argument("--jwt-key-file", type=Path)
    p.add_argument("--ldap-reader-password-file", type=Path)
    p.add_argument("--ssh-ca-pub-file", type=Path)
    a = p.parse_args(argv)
    return a.command, Options(a.root, a.addr, a.nodename, a.cpus, a.memory_mb, a.jwt_key_file,
                              a.ldap_reader_password_file, a.ssh_ca_pub_file)


def main(argv: list[str] | None = None) -> int:
    command, opts = parse(argv)
    if command == "run":
        ensure_users()  # before rendering: the LDIF carries their uid/gid numbers
    files = render(opts)
    if command == "render":
        for name, path in files.items():
            print(f"{name}\t{path}")
        return 0
    prepare_system(opts, files)
    procs = []
    for name, cmd, env in daemons(opts, files):
        procs.append((name, subprocess.Popen(cmd, env={**os.environ, **env})))
        time.sleep(1.0 if name in ("munged", "slurmctld") else 0.2)
    return supervise(procs)


if __name__ == "__main__":
    raise SystemExit(main())
