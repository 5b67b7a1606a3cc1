"""Baseline JupyterHub: batchspawner's SlurmSpawner on the benchmark stack's Slurm.

Configured the way batchspawner's README recommends, not tuned: its default batch script
(``srun batchspawner-singleuser jupyterhub-singleuser``), ``exec_prefix = "sudo -E -u
{username}"`` (its default: submit, query and cancel as the user), JupyterHub's default
``poll_interval`` (30 s) and batchspawner's ``startup_poll_interval`` (0.5 s). The user
environment is set up in ``req_prologue`` (the README's place for ``module load`` / venv
activation); ``start_timeout`` is raised as the README advises for batch queues.

Proxy: TraefikRedisProxy (jupyterhub-traefik-proxy) against the stack's Redis + Traefik,
the same proxy hpchub uses. Authentication: DummyAuthenticator — spawns are driven through
the REST API with an admin service token, so no login happens; this does not change what
reaches Slurm. Named servers let one user hold many servers.

Everything site-specific comes from BASELINE_* environment variables set by
:mod:`benchmarks.baseline.hub`.
"""

import os

env = os.environ
c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by JupyterHub

c.JupyterHub.bind_url = env["BASELINE_PUBLIC_URL"]
c.JupyterHub.hub_bind_url = env["BASELINE_HUB_URL"]
c.JupyterHub.db_url = "sqlite:///jupyterhub.sqlite"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 0  # no limit

c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = set(env["BASELINE_USERS"].split(","))
c.JupyterHub.services = [{"name": "bench", "api_token": env["BASELINE_API_TOKEN"]}]
c.JupyterHub.load_roles = [{
    "name": "bench",
    "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"],
    "services": ["bench"],
}]

c.JupyterHub.proxy_class = "traefik_redis"
c.TraefikRedisProxy.should_start = False
c.TraefikRedisProxy.enable_setup_dynamic_config = False
c.TraefikRedisProxy.redis_url = env["BASELINE_REDIS_URL"]
c.TraefikRedisProxy.redis_password = env.get("BASELINE_REDIS_PASSWORD", "")
c.TraefikRedisProxy.kv_traefik_prefix = "traefik"
c.TraefikRedisProxy.traefik_api_url = env["BASELINE_TRAEFIK_API_URL"]
c.TraefikRedisProxy.traefik_api_username = ""
c.TraefikRedisProxy.traefik_api_password = ""
c.TraefikRedisProxy.traefik_entrypoint = "web"

c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.Spawner.environment = {"SLURM_CONF": env["BASELINE_SLURM_CONF"]}
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 120
c.SlurmSpawner.req_partition = env.get("BASELINE_PARTITION", "compute")
c.SlurmSpawner.req_runtime = "2:00:00"
c.SlurmSpawner.req_prologue = f"export PATH={env['BASELINE_VENV_BIN']}:$PATH"
# JupyterHub 5+ keeps no variables by default, so `srun` (its job step gets only the
# --export list) would not see the PATH set above: add it, as batchspawner's README shows.
c.SlurmSpawner.req_keepvars_extra = "PATH"
# Defaults kept on purpose: exec_prefix "sudo -E -u {username}", req_srun "srun",
# batch_query_cmd "squeue -h -j {job_id} -o '%T %B'", poll_interval 30 s.
