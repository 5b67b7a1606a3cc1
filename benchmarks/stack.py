"""The real stack for one benchmark run, brought up once: kube-apiserver, Slurm (with an
overcommitted CPU count and a ``hold`` partition that is DOWN, so jobs there stay PENDING),
Redis + Traefik, OpenLDAP and PostgreSQL (for hpchub's hub, started by the scenarios that
spawn through it), and the hpchub operator with two HPCClusters on the same Slurm:

* ``local`` — the real launcher starting real JupyterLab;
* ``mini``  — the real launcher from a small environment whose ``jupyter-lab`` is
  :mod:`benchmarks.minimal_app` (for hundreds of servers on one machine).

Both use the product's default poll intervals (fast 2 s, slow 15 s): no benchmark tuning.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpchub_api import constants as c
from hpchub_stack.base import make_root, remove_root
from hpchub_stack.bootstrap import (
    CLUSTERS,
    admin_client,
    cluster_manifest,
    ensure,
    operator_process,
    prepare_operator,
    wait_operator_ready,
)
from hpchub_stack.kube import KubeAPIServer
from hpchub_stack.kubeclient import KubeClient, KubeError
from hpchub_stack.ldap import LdapDirectory
from hpchub_stack.operator_proc import OperatorProcess
from hpchub_stack.postgres import Postgres
from hpchub_stack.process import run
from hpchub_stack.redis import Redis
from hpchub_stack.slurm import Partition, SlurmCluster
from hpchub_stack.traefik import Traefik
from hpchub_stack.users import ensure_unix_users

NS = "default"
SERVERS = f"/apis/{c.API_VERSION}/namespaces/{NS}/{c.SERVER_PLURAL}"
USERS = ("alice", "bob", "carol")
HOLD = "hold"
"""A partition set DOWN after start: jobs are accepted and stay PENDING (PartitionDown)."""
REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Stack:
    root: Path
    kube: KubeAPIServer
    admin: KubeClient
    slurm: SlurmCluster
    redis: Redis
    traefik: Traefik
    operator: OperatorProcess
    ldap: LdapDirectory
    postgres: Postgres


def make_minimal_env(root: Path) -> Path:
    """A venv (from /usr/bin/python3, readable by job users) whose ``hpchub-launch`` is the
    real launcher and whose ``jupyter-lab`` is the minimal app. Returns the launcher path."""
    env = root / "minienv"
    run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(env)])
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "hpchub_operator_src.pth").write_text(str(REPO / "operator") + "\n")
    py = env / "bin" / "python"
    launcher = env / "bin" / "hpchub-launch"
    launcher.write_text(f"#!{py}\nimport sys\nfrom hpchub_launch.__main__ import main\n"
                        "sys.exit(main())\n")
    app = env / "bin" / "jupyter-lab"
    app.write_text(f"#!{py}\n" + (Path(__file__).parent / "minimal_app.py").read_text())
    for path in (launcher, app):
        path.chmod(0o755)
    return launcher


def bench_cluster(slurm: SlurmCluster, callback_url: str, name: str,
                  launcher: str | None = None) -> dict[str, Any]:
    """The stack's HPCCluster manifest with product-default poll intervals and room for
    1,000 servers per user."""
    body = cluster_manifest(slurm, callback_url)
    body["metadata"]["name"] = name
    for key in ("fastPollSeconds", "slowPollSeconds"):
        body["spec"]["slurm"].pop(key, None)
    body["spec"]["policy"]["maxServersPerUser"] = 1000
    body["spec"]["policy"]["maxTimeLimit"] = "1-00:00:00"
    body["spec"]["defaults"]["timeLimit"] = "2:00:00"
    body["spec"]["launcher"]["startTimeoutSeconds"] = 300
    if launcher:
        body["spec"]["launcher"]["command"] = launcher
    return body


@contextlib.contextmanager
def bring_up(cpus: int) -> Any:
    """Start everything; yield a :class:`Stack`; stop everything (also on errors)."""
    root = make_root("hpchub-bench-")
    with ExitStack() as es:
        es.callback(remove_root, root)

        def start(service: Any) -> Any:
            es.callback(service.stop)
            service.start()
            return service

        began = time.monotonic()
        ensure_unix_users()
        kube = start(KubeAPIServer(root))
        admin = admin_client(kube)
        slurm = start(SlurmCluster(root, cpus=cpus, partitions=(
            Partition("compute", default=True, max_time="1-00:00:00"),
            Partition(HOLD, max_time="1-00:00:00"))))
        run(["scontrol", "update", f"PartitionName={HOLD}", "State=DOWN"],
            env=slurm.command_env())
        redis = start(Redis(root, generate_password=True))
        traefik = start(Traefik(root, redis=redis))
        ldap = start(LdapDirectory(root))
        postgres = start(Postgres(root))
        kubeconfig = prepare_operator(kube, admin, slurm, root)
        operator = operator_process(root, kubeconfig)
        ensure(admin, CLUSTERS, bench_cluster(slurm, operator.callback_url, "local"))
        ensure(admin, CLUSTERS, bench_cluster(slurm, operator.callback_url, "mini",
                                              str(make_minimal_env(root))))
        start(operator)
        wait_operator_ready(admin)
        log(f"stack up in {time.monotonic() - began:.0f}s (root {root}, Slurm CPUs {cpus})")
        yield Stack(root, kube, admin, slurm, redis, traefik, operator, ldap, postgres)
        log("stopping the stack")


def save_logs(stack: Stack, dest: Path) -> None:
    """Copy the operator's and Slurm's logs (what the figures' timelines are read from) to
    ``dest`` before the stack and its directory go."""
    dest.mkdir(parents=True, exist_ok=True)
    slurm_logs = stack.slurm.root / "log"
    sources = [stack.operator.log_path, *sorted(slurm_logs.glob("*.log")),
               *sorted(slurm_logs.glob("*.stderr"))]
    for src in sources:
        with contextlib.suppress(OSError):
            shutil.copy2(src, dest / src.name)


# ----------------------------------------------------------------- JupyterServers


def server_manifest(name: str, user: str, cluster: str, partition: str = "compute"
                    ) -> dict[str, Any]:
    return {"apiVersion": c.API_VERSION, "kind": c.SERVER_KIND, "metadata": {"name": name},
            "spec": {"user": user, "cluster": cluster, "target": "slurm",
                     "slurm": {"partition": partition}}}


def create_servers(admin: KubeClient, names: list[str], cluster: str,
                   partition: str = "compute") -> None:
    for i, name in enumerate(names):
        admin.create(SERVERS, server_manifest(name, USERS[i % len(USERS)], cluster, partition))


def phases(admin: KubeClient) -> dict[str, str]:
    items = admin.get(SERVERS)["items"]
    return {o["metadata"]["name"]: (o.get("status") or {}).get("phase", "") for o in items}


def failure_messages(admin: KubeClient, names: list[str]) -> dict[str, str]:
    out = {}
    for obj in admin.get(SERVERS)["items"]:
        st = obj.get("status") or {}
        if obj["metadata"]["name"] in names and st.get("phase") == "Failed":
            out[obj["metadata"]["name"]] = f"{st.get('reason')}: {st.get('message')}"
    return out


def wait_phases(stack: Stack, names: list[str], want: set[str], timeout: float
                ) -> dict[str, str]:
    """Poll until every named server is in one of ``want``; raise with the stragglers, or
    at once when a Slurm daemon has died (nothing would change any more)."""
    admin = stack.admin
    deadline = time.monotonic() + timeout
    while True:
        dead = stack.slurm.exited()
        if dead:
            raise RuntimeError(f"Slurm daemons ended (exit status): {dead}; see "
                               "logs/*.stderr")
        now = phases(admin)
        late = {n: now.get(n, "?") for n in names if now.get(n) not in want}
        if not late:
            return now
        if "Failed" not in want and "Failed" in late.values():
            raise RuntimeError(f"servers failed: {failure_messages(admin, names)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(late)} servers not in {want}: {dict(list(late.items())[:8])}")
        time.sleep(1.0)


def delete_all_servers(stack: Stack, timeout: float = 300) -> None:
    """Delete every JupyterServer and wait until the finalizers let go."""
    for name in phases(stack.admin):
        with contextlib.suppress(KubeError):
            stack.admin.delete(f"{SERVERS}/{name}")
    deadline = time.monotonic() + timeout
    while phases(stack.admin):
        if time.monotonic() > deadline:
            raise TimeoutError(f"JupyterServers still there: {list(phases(stack.admin))[:8]}")
        time.sleep(1.0)


def squeue_count(slurm: SlurmCluster) -> int:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], env=slurm.command_env(),
                         capture_output=True, check=False, timeout=30)
    return len(out.stdout.split())


def cancel_all_jobs(slurm: SlurmCluster) -> None:
    """scancel every job of the benchmark users."""
    for user in USERS:
        run(["scancel", f"--user={user}"], env=slurm.command_env(), check=False)


def venv_bin() -> str:
    return str(Path(sys.executable).parent)


def which_or(name: str, fallback: str) -> str:
    return shutil.which(name, path=venv_bin() + os.pathsep + os.environ.get("PATH", "")) \
        or fallback
