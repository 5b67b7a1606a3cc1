"""The mini-HPC image's entrypoint (docker/mini-hpc/minihpc.py), run on this machine outside
the image: it renders every file into a temporary root, and the daemons' own checkers accept
them (sshd -t, slaptest). The demo Unix users come from hpchub_stack.users (root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hpchub_stack.users import ensure_unix_users

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "mini-hpc" / "minihpc.py"


def _render(root: Path, *extra: str) -> dict[str, Path]:
    res = subprocess.run([sys.executable, str(ENTRYPOINT), "render", "--root", str(root),
                          "--addr", "10.244.0.7", "--nodename", "mini", "--cpus", "2",
                          *extra], capture_output=True, text=True, check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    return {k: Path(v) for k, v in (line.split("\t") for line in res.stdout.splitlines())}


def test_render_uses_the_pod_address_and_mounted_secrets(tmp_path: Path) -> None:
    ensure_unix_users()
    jwt = tmp_path / "jwt.key"
    jwt.write_bytes(b"k" * 32)
    reader = tmp_path / "reader"
    reader.write_text("reader-pass\n")
    ca = tmp_path / "ca.pub"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")],
                   check=True)
    files = _render(tmp_path / "root", "--jwt-key-file", str(jwt),
                    "--ldap-reader-password-file", str(reader), "--ssh-ca-pub-file", str(ca))
    conf = files["slurm.conf"].read_text()
    assert "SlurmctldHost=mini(10.244.0.7)" in conf
    assert "NodeName=mini NodeAddr=10.244.0.7 CPUs=2" in conf
    assert "AuthAltTypes=auth/jwt" in conf
    assert files["jwt.key"].read_bytes() == b"k" * 32
    assert files["jwt.key"].stat().st_mode & 0o777 == 0o600
    assert files["munge.key"].stat().st_size == 1024
    assert files["user_ca.pub"].read_text() == ca.read_text()
    assert "ListenAddress 10.244.0.7" in files["sshd_config"].read_text()
    ldif = files["init.ldif"].read_text()
    assert "uid=alice,ou=people" in ldif and "cn=hub-reader" in ldif


def test_rendered_configs_pass_the_daemons_checks(tmp_path: Path) -> None:
    ensure_unix_users()
    files = _render(tmp_path / "root")
    sshd_conf = files["sshd_config"].read_text().replace("10.244.0.7", "127.0.0.1")
    files["sshd_config"].write_text(sshd_conf)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    res = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(files["sshd_config"])],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(["slaptest", "-u", "-f", str(files["slapd.conf"])],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_rendering_twice_is_idempotent(tmp_path: Path) -> None:
    ensure_unix_users()
    first = _render(tmp_path / "root")
    key = first["ssh_host_key"].read_bytes()
    second = _render(tmp_path / "root")
    assert second["ssh_host_key"].read_bytes() == key
    assert first["slurm.conf"].read_text() == second["slurm.conf"].read_text()
