"""Table tests of the admission decisions: identity, cluster policy, immutability."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kopf
import pytest

from hpchub_api import constants as c
from hpchub_operator import admission as adm
from hpchub_operator.handlers import REGISTRY
from hpchub_operator.settings import OperatorSettings

HUB = "system:serviceaccount:hpchub:hub"
SETTINGS = OperatorSettings(admin_group="hpchub:admins", hub_service_accounts=[HUB])
ALICE = adm.Requester("alice", ("system:authenticated",))

CLUSTER: dict[str, Any] = {"metadata": {"name": "local"}, "spec": {
    "slurm": {"backend": "rest", "restUrl": "http://127.0.0.1:6820"},
    "login": {"nodes": [{"name": "login1", "host": "10.0.0.5"}]},
    "policy": {"partitions": ["compute", "gpu"], "accounts": ["proj-astro"],
               "apps": ["jupyterlab"], "environmentVariables": ["OMP_NUM_THREADS"],
               "maxGpus": 2, "maxCpusPerTask": 4, "maxTimeLimit": "2:00:00",
               "maxMemory": "16G", "maxServersPerUser": 3},
    "defaults": {"partition": "compute", "timeLimit": "30"},
}}
NO_LOGIN = {**CLUSTER, "spec": {**CLUSTER["spec"], "login": {}}}


def spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"user": "alice", "cluster": "local",
                            "slurm": {"partition": "compute", "account": "proj-astro"}}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def refusals(raw: dict[str, Any], cluster: dict[str, Any] | None = CLUSTER,
             requester: adm.Requester = ALICE, active: int = 0) -> list[str]:
    return adm.create_refusals(raw, cluster, requester, SETTINGS, active)


def test_valid_server_of_oneself_is_admitted() -> None:
    assert refusals(spec()) == []


POLICY_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("partition", {"slurm": {"partition": "debug"}}, "spec.slurm.partition"),
    ("account", {"slurm": {"account": "proj-bio"}}, "spec.slurm.account"),
    ("gpus", {"slurm": {"gpus": 3}}, "spec.slurm.gpus"),
    ("gpu-type-alone", {"slurm": {"gpuType": "a100"}}, "spec.slurm.gpuType"),
    ("cpus", {"slurm": {"cpusPerTask": 8}}, "spec.slurm.cpusPerTask"),
    ("memory", {"slurm": {"memory": "32G"}}, "spec.slurm.memory"),
    ("time", {"slurm": {"timeLimit": "3:00:00"}}, "spec.slurm.timeLimit"),
    ("app", {"app": "rstudio"}, "spec.app"),
    ("env", {"environment": {"variables": [{"name": "LD_PRELOAD", "value": "x"}]}},
     "spec.environment.variables"),
    ("login-node", {"target": "login", "login": {"node": "login9"}}, "spec.login.node"),
]


@pytest.mark.parametrize(("over", "field"), [(o, f) for _, o, f in POLICY_CASES],
                         ids=[n for n, _, _ in POLICY_CASES])
def test_policy_violation_is_refused_naming_the_field(over: dict[str, Any],
                                                      field: str) -> None:
    found = refusals(spec(**over))
    assert len(found) == 1, found
    assert found[0].startswith(field + ":"), found


def test_login_target_without_login_nodes_is_refused() -> None:
    assert refusals(spec(target="login"), NO_LOGIN) == [
        "spec.target: cluster local has no login nodes configured"]


def test_unknown_cluster_is_refused() -> None:
    assert refusals(spec(cluster="mars"), None) == [
        "spec.cluster: HPCCluster 'mars' does not exist"]


def test_misconfigured_cluster_is_refused() -> None:
    broken = {"spec": {"policy": {"maxGpus": -1}}}
    [msg] = refusals(spec(), broken)
    assert msg.startswith("spec.cluster: HPCCluster 'local' is misconfigured")


def test_too_many_servers_of_the_user_is_refused() -> None:
    assert refusals(spec(), active=2) == []
    [msg] = refusals(spec(), active=3)
    assert msg.startswith("spec.user: alice already has 3 servers")


def test_every_violation_is_reported() -> None:
    found = refusals(spec(user="bob", app="rstudio", slurm={"gpus": 5}))
    assert [m.split(":")[0] for m in found] == ["spec.user", "spec.app", "spec.slurm.gpus"]


def test_unparsable_spec_is_refused() -> None:
    [msg] = refusals(spec(user="-oProxyCommand=x"))
    assert msg.startswith("spec.user:")


IDENTITY_CASES: list[tuple[str, adm.Requester, str, bool]] = [
    ("self", adm.Requester("alice"), "alice", True),
    ("other-user", adm.Requester("alice", ("system:authenticated",)), "bob", False),
    ("hub-service-account", adm.Requester(HUB, ("system:serviceaccounts",)), "bob", True),
    ("other-service-account", adm.Requester("system:serviceaccount:default:x"), "bob", False),
    ("admin-group", adm.Requester("carol", ("hpchub:admins",)), "bob", True),
    ("superuser", adm.Requester("admin", ("system:masters",)), "bob", True),
    ("group-named-like-user", adm.Requester("mallory", ("bob",)), "bob", False),
    ("anonymous", adm.Requester("", ()), "bob", False),
]


@pytest.mark.parametrize(("requester", "user", "allowed"),
                         [(r, u, a) for _, r, u, a in IDENTITY_CASES],
                         ids=[n for n, *_ in IDENTITY_CASES])
def test_who_may_create_servers_for_whom(requester: adm.Requester, user: str,
                                         allowed: bool) -> None:
    found = refusals(spec(user=user), requester=requester)
    assert (found == []) is allowed, found
    if not allowed:
        assert found[0].startswith("spec.user:") and "may not create" in found[0]
        assert adm.refusal_code(found) == 403


def test_policy_refusals_are_unprocessable() -> None:
    assert adm.refusal_code(refusals(spec(app="rstudio"))) == 422


def test_requester_from_userinfo() -> None:
    info = {"username": "alice", "uid": "1", "groups": ["a", "b"]}
    assert adm.Requester.from_userinfo(info) == adm.Requester("alice", ("a", "b"))
    assert adm.Requester.from_userinfo({}) == adm.Requester("", ())


# ----------------------------------------------------------------------------- update


FULL = spec(slurm={"gpus": 1, "gpuType": "a100", "timeLimit": "1:00:00"},
            environment={"modules": ["python/3.11"],
                         "variables": [{"name": "OMP_NUM_THREADS", "value": "2"}]},
            hub={"tokenSecret": "hub-token-alice"})


def changed(path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(FULL)
    *parents, leaf = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


UPDATE_CASES: list[tuple[str, Any, str]] = [
    ("user", "bob", "spec.user"),
    ("cluster", "other", "spec.cluster"),
    ("target", "login", "spec.target"),
    ("serverName", "second", "spec.serverName"),
    ("app", "rstudio", "spec.app"),
    ("slurm.partition", "gpu", "spec.slurm.partition"),
    ("slurm.gpus", 2, "spec.slurm.gpus"),
    ("login.node", "login1", "spec.login.node"),
    ("environment.modules", ["python/3.12"], "spec.environment.modules"),
    ("environment.variables", [], "spec.environment.variables"),
    ("hub.tokenSecret", "someone-else", "spec.hub.tokenSecret"),
]


@pytest.mark.parametrize(("path", "value", "field"), UPDATE_CASES,
                         ids=[u[0] for u in UPDATE_CASES])
def test_spec_is_immutable(path: str, value: Any, field: str) -> None:
    found = adm.update_refusals(FULL, changed(path, value))
    assert len(found) == 1, found
    assert found[0].startswith(field + ": cannot change"), found


def test_setting_stop_is_allowed() -> None:
    assert adm.update_refusals(FULL, {**FULL, "stop": True}) == []
    assert adm.update_refusals({**FULL, "stop": True}, {**FULL, "stop": True}) == []


def test_stopped_server_cannot_be_restarted() -> None:
    assert adm.update_refusals({**FULL, "stop": True}, {**FULL, "stop": False}) == [
        "spec.stop: a stopped server cannot be restarted; create a new one"]


def test_defaults_made_explicit_are_no_change() -> None:
    explicit = {**FULL, "app": "jupyterlab", "target": "slurm", "serverName": "",
                "stop": False, "slurm": {**FULL["slurm"], "nodes": 1}}
    assert adm.update_refusals(FULL, explicit) == []


def test_metadata_only_update_is_allowed() -> None:
    assert adm.update_refusals(FULL, copy.deepcopy(FULL)) == []


def test_unparsable_old_spec_still_compared() -> None:
    legacy = {**FULL, "user": "Not Valid"}
    assert adm.update_refusals(legacy, legacy) == []
    assert adm.update_refusals(legacy, {**legacy, "user": "alice"})[0].startswith("spec.user")


# ----------------------------------------------------------------------------- wiring


def test_listen_address() -> None:
    assert adm.listen_address("127.0.0.1") == "127.0.0.1"
    assert adm.listen_address("::1") == "::1"
    assert adm.listen_address("hpchub-webhook.hpchub.svc") == "0.0.0.0"


def test_webhook_disabled_with_port_zero() -> None:
    kopf_settings = kopf.OperatorSettings()
    adm.configure_webhook(kopf_settings, OperatorSettings(webhook_port=0))
    assert kopf_settings.admission.server is not None  # kopf needs one: it never serves
    assert kopf_settings.admission.managed is None


def test_webhook_uses_given_certificates(tmp_path: Path) -> None:
    kopf_settings = kopf.OperatorSettings()
    ours = OperatorSettings(webhook_port=9443, webhook_host="hpchub-webhook.hpchub.svc",
                            webhook_cert_dir=str(tmp_path))
    adm.configure_webhook(kopf_settings, ours)
    server = kopf_settings.admission.server
    assert isinstance(server, kopf.WebhookServer)
    assert (server.addr, server.port, server.host) == ("0.0.0.0", 9443, ours.webhook_host)
    assert server.certfile == str(tmp_path / "tls.crt")
    assert server.pkeyfile == str(tmp_path / "tls.key")
    assert server.cafile == str(tmp_path / "ca.crt")
    assert kopf_settings.admission.managed == c.GROUP


def test_webhooks_fail_closed_and_stay_registered() -> None:
    from kopf._cogs.structs.references import Resource
    from kopf._core.engines.admission import build_webhooks

    resource = Resource(c.GROUP, c.VERSION, c.SERVER_PLURAL)
    handlers = [h for h in REGISTRY._webhooks.get_all_handlers()
                if h.id in ("jupyterserver-create", "jupyterserver-update")]
    hooks = build_webhooks(handlers, resources=[resource], name_suffix=c.GROUP,
                           client_config={"url": "https://127.0.0.1:9443"},
                           persistent_only=True)
    assert {h["failurePolicy"] for h in hooks} == {"Fail"}
    assert sorted(op for h in hooks for r in h["rules"] for op in r["operations"]) == [
        "CREATE", "UPDATE"]
    assert all(r["resources"] == [c.SERVER_PLURAL] for h in hooks for r in h["rules"])
