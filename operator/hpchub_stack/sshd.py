"""An OpenSSH server that trusts only certificates signed by the stack's own user CA.

The stack generates an ed25519 host key and an ed25519 user-CA key (private file 0600 under
the service directory). sshd accepts no passwords and no ``authorized_keys``: a client logs
in with a short-lived certificate whose principal is the Unix login, signed by
:meth:`SSHServer.sign_user_key` (``ssh-keygen -s``). ``UsePAM yes`` is required on Debian:
accounts created without a password are "locked" and refused when PAM is off.
"""

from __future__ import annotations

import itertools
import socket
import tempfile
import time
from pathlib import Path

from .base import OneProcessService
from .process import ServiceError, free_port, fresh_dir, run

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself: it must be started by absolute path
PRIVSEP_DIR = Path("/run/sshd")
_serials = itertools.count(int(time.time()))


def ssh_banner(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when an SSH server greets on host:port."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        return sock.recv(64).startswith(b"SSH-2.0-")


def generate_ed25519(path: Path, comment: str) -> str:
    """Write an unencrypted ed25519 key pair (private 0600) and return the public key line."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    path.chmod(0o600)
    return path.with_name(path.name + ".pub").read_text().strip()


class SSHServer(OneProcessService):
    """sshd on 127.0.0.1 with certificate-only logins; implements the Service protocol."""

    name = "sshd"
    log_names = ("sshd.log",)

    def __init__(self, root: Path, *, port: int | None = None, ready_timeout: float = 30.0) -> None:
        self.dir = root / self.name
        self.port = port
        self.ready_timeout = ready_timeout
        self.ca_private_key_path = self.dir / "user_ca"
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.config_path = self.dir / "sshd_config"
        self.ca_public_key = ""
        self.host_public_key = ""

    # -- public surface ---------------------------------------------------------------------

    @property
    def known_hosts_line(self) -> str:
        """``[127.0.0.1]:PORT ssh-ed25519 AAAA...`` for a client's known_hosts."""
        if self.port is None or not self.host_public_key:
            raise ServiceError("sshd: not started")
        key_type, key_b64 = self.host_public_key.split()[:2]
        return f"[{self.host}]:{self.port} {key_type} {key_b64}"

    def start(self) -> None:
        """Make the keys and config, check the config with ``sshd -t`` and start sshd."""
        if self.port is None:
            self.port = free_port()
        fresh_dir(self.dir, mode=0o755)
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.host_public_key = generate_ed25519(self.host_key_path, "hpchub-stack-host")
        self.ca_public_key = generate_ed25519(self.ca_private_key_path, "hpchub-stack-user-ca")
        self.config_path.write_text(self.sshd_config())
        run([SSHD, "-t", "-f", str(self.config_path)])
        port = self.port
        self._start_process(
            [SSHD, "-D", "-e", "-f", str(self.config_path)],
            ready=lambda: ssh_banner(self.host, port),
        )

    def sign_user_key(
        self, public_key: str, principal: str, validity: str = "-1m:+5m", key_id: str | None = None
    ) -> str:
        """Sign an OpenSSH public key line with the user CA; return the certificate line.

        ``validity`` uses ssh-keygen's ``-V`` syntax (``-1m:+5m``: from one minute ago, to
        guard against clock skew, until five minutes from now).
        """
        if not self.ca_public_key:
            raise ServiceError("sshd: not started (no user CA yet)")
        serial = next(_serials)
        with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
            pub = Path(tmp) / "user.pub"
            pub.write_text(public_key.strip() + "\n")
            run(
                [
                    "ssh-keygen",
                    "-q",
                    "-s",
                    str(self.ca_private_key_path),
                    "-I",
                    key_id or f"hpchub-{principal}-{serial}",
                    "-z",
                    str(serial),
                    "-n",
                    principal,
                    "-V",
                    validity,
                    str(pub),
                ]
            )
            return (Path(tmp) / "user-cert.pub").read_text().strip()

    # -- configuration ----------------------------------------------------------------------

    def sshd_config(self) -> str:
        """The sshd_config text: certificate-only logins on 127.0.0.1."""
        ca_pub = self.dir / "user_ca.pub"
        return f"""Port {self.port}
ListenAddress {self.host}
HostKey {self.host_key_path}
PidFile {self.dir / "sshd.pid"}
TrustedUserCAKeys {ca_pub}
AuthorizedKeysFile none
AuthorizedPrincipalsFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM yes
UseDNS no
PrintMotd no
LogLevel VERBOSE
AllowTcpForwarding yes
Subsystem sftp internal-sftp
"""
