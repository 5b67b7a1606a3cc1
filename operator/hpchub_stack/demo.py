"""``hpchub demo``: the whole system on this machine, for a person to try in a browser.

Starts the real stack (API server, Slurm, slurmrestd, slapd with demo users, PostgreSQL,
Redis, Traefik, the operator, JupyterHub), prints the portal URL and demo credentials, and
stops everything cleanly on Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

from .base import Service, make_root, remove_root
from .bootstrap import (
    CLUSTERS,
    admin_client,
    cluster_manifest,
    ensure,
    operator_process,
    prepare_operator,
    wait_operator_ready,
)
from .hub import JupyterHubProcess
from .hub_setup import hub_settings, prepare_hub
from .kube import KubeAPIServer
from .kubeclient import KubeClient
from .ldap import LdapDirectory
from .postgres import Postgres
from .redis import Redis
from .slurm import SlurmCluster
from .traefik import Traefik
from .users import USERS, ensure_unix_users

S = TypeVar("S", bound=Service)


class Progress:
    """Numbered progress lines with timings, for a start that takes minutes the first time."""

    def __init__(self, total: int, out: Callable[[str], None] = print) -> None:
        self.total = total
        self.step = 0
        self.out = out
        self.began = time.monotonic()

    @contextmanager
    def stage(self, what: str) -> Iterator[None]:
        self.step += 1
        self.out(f"[{self.step}/{self.total}] {what} ...")
        t = time.monotonic()
        yield
        self.out(f"[{self.step}/{self.total}] {what}: ready in {time.monotonic() - t:.1f}s")


def _start(stack: ExitStack, service: S) -> S:
    stack.callback(service.stop)
    service.start()
    return service


def run_demo(root: Path | None = None, wait: bool = True) -> int:
    """Bring the system up; block until interrupted; tear it down. Returns an exit code."""
    if os.geteuid() != 0:
        print("hpchub demo runs Slurm and test users: run it as root (or with sudo).",
              file=sys.stderr)
        return 1
    root = root or make_root("hpchub-demo-")
    progress = Progress(total=9)
    with ExitStack() as stack:
        stack.callback(remove_root, root)
        with progress.stage("demo users (Unix accounts)"):
            ensure_unix_users()
        with progress.stage("Kubernetes API server (etcd + kube-apiserver)"):
            kube = _start(stack, KubeAPIServer(root))
            admin = admin_client(kube)
        with progress.stage("Slurm (munge, slurmctld, slurmd, slurmrestd)"):
            slurm = _start(stack, SlurmCluster(root, cpus=max(8, 4 * (os.cpu_count() or 1))))
        with progress.stage("OpenLDAP with demo users"):
            ldap = _start(stack, LdapDirectory(root))
        with progress.stage("PostgreSQL"):
            postgres = _start(stack, Postgres(root))
        with progress.stage("Redis and Traefik"):
            redis = _start(stack, Redis(root, generate_password=True))
            traefik = _start(stack, Traefik(root, redis=redis))
        with progress.stage("hpchub operator"):
            kubeconfig = prepare_operator(kube, admin, slurm, root)
            operator = operator_process(root, kubeconfig)
            ensure(admin, CLUSTERS, cluster_manifest(slurm, operator.callback_url))
            _start(stack, operator)
            wait_operator_ready(admin)
        with progress.stage("JupyterHub"):
            hub_url = _start_hub(stack, root, kube, admin, ldap, postgres, redis, traefik)
        with progress.stage("portal check"):
            _wait_portal(hub_url)
        _banner(hub_url, kube, root)
        if wait:
            _wait_for_interrupt()
        print("\nstopping everything ...")
    print("stopped.")
    return 0


def _start_hub(stack: ExitStack, root: Path, kube: KubeAPIServer, admin: KubeClient,
               ldap: LdapDirectory, postgres: Postgres, redis: Redis, traefik: Traefik) -> str:
    kubeconfig = prepare_hub(kube, admin, root)
    settings = hub_settings(kubeconfig, ldap, postgres, redis, traefik)
    _start(stack, JupyterHubProcess(root, settings, public_url=traefik.url))
    return f"{traefik.url}/hub/"


def _wait_portal(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "login", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the portal did not answer at {url}login")
        time.sleep(0.5)


def _banner(hub_url: str, kube: KubeAPIServer, root: Path) -> None:
    creds = "\n".join(f"    {u.login:8s} {u.password}" + ("   (admin)" if u.admin else "")
                      for u in USERS)
    print(f"""
hpchub is running.

  Portal:       {hub_url}
  Demo users (LDAP login / password):
{creds}

  kubectl:      KUBECONFIG={kube.kubeconfig_path} kubectl get jupyterservers -A
  Logs:         {root}

Press Ctrl-C to stop everything.""", flush=True)


def _wait_for_interrupt() -> None:
    """Until Ctrl-C (SIGINT) or SIGTERM. Both get a handler of ours: a process started in
    the background by a non-interactive shell inherits SIGINT as ignored, and Python then
    never raises KeyboardInterrupt (the demo would not stop, and leave its stack running)."""
    stop = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    with contextlib.suppress(KeyboardInterrupt):
        while not stop:
            time.sleep(0.5)
