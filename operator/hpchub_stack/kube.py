"""etcd + kube-apiserver (envtest style: no kubelet, no controller-manager).

RBAC is on, clients authenticate with static bearer tokens (``tokens.csv``) or with
ServiceAccount tokens from the TokenRequest API. A kubeconfig for the admin is written so
kopf, kubernetes_asyncio and the hub find the server like on a real cluster.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from hpchub_operator.pki import CertificateAuthority, rsa_key_pair

from .base import make_root
from .process import ManagedProcess, ServiceError, free_port, log_tail, tcp_open

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-kube-apiserver.sh"


@dataclass(frozen=True)
class Identity:
    """A static-token identity of the test API server."""

    user: str
    groups: tuple[str, ...]
    token: str


def find_binaries() -> Path:
    """Directory with kube-apiserver: $KUBEBUILDER_ASSETS, the cache, or build it once."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / "kube-apiserver").exists():
        return Path(assets)
    if not BUILD_SCRIPT.exists():
        raise ServiceError("kube-apiserver not found: set KUBEBUILDER_ASSETS")
    res = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        raise ServiceError(f"building kube-apiserver failed:\n{res.stderr[-4000:]}")
    return Path(res.stdout.strip().splitlines()[-1])


class KubeAPIServer:
    """A real Kubernetes API server with etcd, listening on 127.0.0.1."""

    name = "kube-apiserver"

    def __init__(self, root: Path | None = None, extra_identities: dict[str, tuple[str, ...]]
                 | None = None) -> None:
        self.root = root or make_root("hpchub-kube-")
        self.dir = self.root / "kube"
        self.port = free_port()
        self.etcd_port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.identities: dict[str, Identity] = {}
        wanted = {"admin": ("system:masters",), "nobody": ()} | (extra_identities or {})
        for user, groups in wanted.items():
            self.identities[user] = Identity(user, groups, secrets.token_hex(24))
        self._etcd: ManagedProcess | None = None
        self._api: ManagedProcess | None = None
        self.kubeconfig_path = self.dir / "kubeconfig"

    @property
    def admin_token(self) -> str:
        return self.identities["admin"].token

    @property
    def ca_path(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    def start(self) -> None:
        """Start etcd then the API server; block until /readyz answers ok."""
        bins = find_binaries()
        etcd = shutil.which("etcd") or str(bins / "etcd")
        self.dir.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority(self.dir / "pki")
        serving = ca.issue("apiserver", ["127.0.0.1", "localhost", "kubernetes",
                                         "kubernetes.default.svc"])
        sa_key, sa_pub = rsa_key_pair(self.dir / "pki", "sa")
        tokens = self.dir / "tokens.csv"
        tokens.write_text("".join(
            f'{i.token},{i.user},{i.user},"{",".join(i.groups)}"\n'
            for i in self.identities.values()))
        tokens.chmod(0o600)
        self._etcd = ManagedProcess(
            "etcd",
            [etcd, "--data-dir", str(self.dir / "etcd"), "--name", "hpchub",
             "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{free_port()}",
             "--unsafe-no-fsync", "--log-level", "warn"],
            self.dir / "etcd.log",
            ready=lambda: tcp_open("127.0.0.1", self.etcd_port), ready_timeout=30,
        )
        self._etcd.start()
        self._api = ManagedProcess(
            "kube-apiserver",
            [str(bins / "kube-apiserver"),
             f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
             "--bind-address=127.0.0.1", f"--secure-port={self.port}",
             f"--cert-dir={self.dir / 'certs'}",
             f"--tls-cert-file={serving.cert_path}",
             f"--tls-private-key-file={serving.key_path}",
             f"--client-ca-file={ca.cert_path}",
             f"--token-auth-file={tokens}",
             f"--service-account-key-file={sa_pub}",
             f"--service-account-signing-key-file={sa_key}",
             "--service-account-issuer=https://kubernetes.default.svc",
             "--api-audiences=https://kubernetes.default.svc",
             "--authorization-mode=RBAC",
             "--service-cluster-ip-range=10.96.0.0/12",
             "--advertise-address=10.0.0.1",
             "--allow-privileged=true",
             "--disable-admission-plugins=ServiceAccount",
             "--enable-priority-and-fairness=false",
             "--v=1"],
            self.dir / "kube-apiserver.log",
            ready=self._ready, ready_timeout=90,
        )
        try:
            self._api.start()
        except ServiceError:
            self._etcd.stop()
            raise
        self._write_kubeconfig()

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    def _ready(self) -> bool:
        req = urllib.request.Request(f"{self.url}/readyz",
                                     headers={"Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(req, context=self._ssl(), timeout=2) as resp:
            return bool(resp.status == 200)

    def kubeconfig(self, user: str = "admin", token: str | None = None) -> dict[str, object]:
        """A kubeconfig document for a static identity (or a given bearer token)."""
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "hpchub",
            "clusters": [{"name": "hpchub", "cluster": {
                "server": self.url, "certificate-authority": str(self.ca_path)}}],
            "users": [{"name": user, "user": {
                "token": token or self.identities[user].token}}],
            "contexts": [{"name": "hpchub", "context": {
                "cluster": "hpchub", "user": user, "namespace": "default"}}],
        }

    def write_kubeconfig(self, path: Path, user: str = "admin", token: str | None = None
                         ) -> Path:
        """Write a kubeconfig (mode 0600) for a static identity or token; return its path."""
        path.write_text(yaml.safe_dump(self.kubeconfig(user, token)))
        path.chmod(0o600)
        return path

    def _write_kubeconfig(self) -> None:
        self.write_kubeconfig(self.kubeconfig_path)

    def stop(self) -> None:
        """Stop the API server, then etcd."""
        for proc in (self._api, self._etcd):
            if proc is not None:
                proc.stop()

    def logs(self) -> dict[str, str]:
        """Tails of etcd's and the API server's logs."""
        return {p.name: log_tail(p.log_path) for p in (self._etcd, self._api) if p}
