"""The spawn form's choices and the server-side validation of user_options (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from hpchub_hub import form, status
from hpchub_hub.options import OptionsError, choices_for, from_form, validate

CLUSTER: dict[str, Any] = {
    "metadata": {"name": "jz"},
    "spec": {
        "displayName": "Jean Zay",
        "login": {"nodes": [{"name": "jean-zay1", "host": "jz1.example"}]},
        "policy": {
            "partitions": ["cpu_p1", "gpu_p2"],
            "accounts": [],
            "apps": ["jupyterlab"],
            "maxGpus": 4,
            "maxTimeLimit": "20:00:00",
            "maxCpusPerTask": 40,
        },
        "defaults": {"partition": "cpu_p1", "timeLimit": "1:00:00"},
    },
    "status": {
        "reachable": True,
        "partitions": [
            {"name": "cpu_p1", "isDefault": True},
            {"name": "gpu_p2", "gpuTypes": ["v100", "a100"]},
            {"name": "hidden", "gpuTypes": ["h100"]},
        ],
    },
}
PROJECTS = ["abc", "gpu-proj"]
OK = {
    "cluster": "jz",
    "target": "slurm",
    "partition": "gpu_p2",
    "account": "abc",
    "gpus": "2",
    "gpu_type": "a100",
    "time_limit": "2:00:00",
    "modules": "python/3.11 cuda/12.2",
    "conda_env": "torch",
}


def choices(projects: list[str] | None = PROJECTS, **kw: Any) -> Any:
    return choices_for([CLUSTER], projects, **kw)


def refusal(options: dict[str, Any], projects: list[str] | None = PROJECTS) -> str:
    with pytest.raises(OptionsError) as info:
        validate(options, choices(projects))
    return str(info.value)


def test_valid_options_make_the_spec() -> None:
    assert validate(OK, choices()) == {
        "target": "slurm",
        "cluster": "jz",
        "app": "jupyterlab",
        "slurm": {
            "account": "abc",
            "partition": "gpu_p2",
            "gpus": 2,
            "gpuType": "a100",
            "timeLimit": "2:00:00",
        },
        "environment": {"modules": ["python/3.11", "cuda/12.2"], "condaEnv": "torch"},
    }


def test_defaults_fill_the_gaps() -> None:
    spec = validate({"account": "gpu-proj"}, choices())
    assert spec["slurm"] == {"account": "gpu-proj", "partition": "cpu_p1"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"account": "not-mine"}, "not one of your active projects"),
        ({"account": ""}, "choose one of your projects"),
        ({"partition": "hidden"}, "not allowed on jz"),
        ({"partition": "nope"}, "not allowed on jz"),
        ({"gpus": "5"}, "exceeds the limit of 4"),
        ({"gpus": "-1"}, "whole number"),
        ({"gpus": "1e3"}, "whole number"),
        ({"gpu_type": "h100"}, "not available in partition gpu_p2"),
        ({"gpus": "0"}, "set without asking for any GPU"),
        ({"time_limit": "21:00:00"}, "exceeds the limit of 20:00:00"),
        ({"time_limit": "2h"}, "Slurm time"),
        ({"conda_env": "torch; rm -rf ~"}, "is not allowed"),
        ({"conda_env": "$(id)"}, "is not allowed"),
        ({"modules": "python/3.11 `id`"}, "is not allowed"),
        ({"modules": "a|b"}, "is not allowed"),
        ({"working_directory": "/tmp/../etc\n"}, "is not allowed"),
        ({"cluster": "other"}, "not offered"),
        ({"target": "pod"}, "target: must be"),
        ({"app": "rstudio"}, "not offered on jz"),
        ({"cpus_per_task": "41"}, "between 1 and 40"),
        ({"login_node": "x"}, "unknown"),  # only with target=login
        ({"evil": "1"}, "unknown option(s): evil"),
    ],
)
def test_refusals_name_the_field(change: dict[str, Any], reason: str) -> None:
    options = {**OK, **change}
    if "login_node" in change:
        options = {**OK, "target": "login", "login_node": "x"}
        reason = "not a login node of jz"
    assert reason in refusal(options)


def test_every_problem_is_reported_at_once() -> None:
    message = refusal({**OK, "account": "x", "gpus": "9", "conda_env": "a b"})
    assert "account" in message and "gpus" in message and "conda_env" in message


def test_unknown_projects_refuse_an_account_but_allow_the_default() -> None:
    assert "projects are unknown" in refusal({**OK}, projects=None)
    spec = validate({k: v for k, v in OK.items() if k != "account"}, choices(None))
    assert "account" not in spec["slurm"]


def test_policy_accounts_narrow_the_users_projects() -> None:
    cluster = {
        **CLUSTER,
        "spec": {**CLUSTER["spec"], "policy": {**CLUSTER["spec"]["policy"], "accounts": ["abc"]}},
    }
    assert choices_for([cluster], PROJECTS).clusters[0].accounts == ("abc",)


def test_login_target_skips_slurm_resources() -> None:
    spec = validate({"target": "login", "account": "abc", "login_node": "jean-zay1"}, choices())
    assert spec["login"] == {"node": "jean-zay1"} and spec["slurm"] == {"account": "abc"}


def test_form_data_repeated_field_is_refused() -> None:
    assert from_form({"partition": ["cpu_p1"], "gpus": [""], "x": ["1"]}) == {"partition": "cpu_p1"}
    with pytest.raises(OptionsError, match="more than once"):
        from_form({"account": ["abc", "gpu-proj"]})


def test_form_offers_only_the_users_projects_and_visible_partitions() -> None:
    html = form.render(choices(["abc"]))
    assert 'value="abc"' in html and "gpu-proj" not in html
    assert 'value="gpu_p2"' in html and 'value="hidden"' not in html
    assert 'value="a100"' in html and "h100" not in html


def test_form_escapes_values() -> None:
    html = form.render(choices(["abc"]), {"conda_env": '"><script>x</script>'})
    assert "<script>x" not in html and "&quot;&gt;&lt;script&gt;" in html


@pytest.mark.parametrize(
    ("user", "server", "name"),
    [
        ("alice", "", "jupyter-alice"),
        ("alice", "gpu", "jupyter-alice--gpu"),
    ],
)
def test_object_names(user: str, server: str, name: str) -> None:
    assert status.object_name(user, server) == name


def test_object_names_are_collision_safe_and_valid() -> None:
    names = {
        status.object_name(u, s)
        for u, s in [
            ("a_b", ""),
            ("a-b", ""),
            ("alice", "My.Server"),
            ("alice", "my-server"),
            ("x" * 32, "y" * 63),
        ]
    }
    assert len(names) == 5
    for name in names:
        assert len(name) <= 63 and name == name.lower() and "_" not in name and "." not in name


def test_hub_environment_drops_the_token_and_bad_values() -> None:
    env = {
        "JUPYTERHUB_API_TOKEN": "secret",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/a/",
        "JUPYTERHUB_SERVER_NAME": "",
        "JPY_API_TOKEN": "x",
        "PATH": "/bin",
        "JUPYTERHUB_BAD": "a\nb",
    }
    assert status.hub_environment(env) == [
        {"name": "JUPYTERHUB_SERVICE_PREFIX", "value": "/user/a/"}
    ]


@pytest.mark.parametrize(
    ("obj", "code"),
    [
        (None, 0),
        ({"metadata": {}}, None),
        ({"metadata": {}, "status": {"phase": "Queued"}}, None),
        ({"metadata": {}, "status": {"phase": "Unknown"}}, None),
        ({"metadata": {}, "status": {"phase": "Running"}}, None),
        ({"metadata": {"deletionTimestamp": "t"}, "status": {"phase": "Running"}}, 0),
        ({"metadata": {}, "status": {"phase": "Stopping"}}, 0),
        ({"metadata": {}, "status": {"phase": "Stopped"}}, 0),
        ({"metadata": {}, "status": {"phase": "Failed"}}, 1),
        ({"metadata": {}, "status": {"phase": "Failed", "exitCode": 3}}, 3),
    ],
)
def test_poll_exit_status(obj: dict[str, Any] | None, code: int | None) -> None:
    assert status.exit_status(obj) == code


def test_queued_message_carries_reason_and_estimated_start() -> None:
    msg = status.phase_message(
        {
            "status": {
                "phase": "Queued",
                "jobId": "42",
                "reason": "Resources",
                "estimatedStart": "2026-11-26T14:00:00Z",
            }
        }
    )
    assert msg == (
        "Queued in Slurm (job 42), reason: Resources, estimated start: 2026-11-26T14:00:00Z"
    )


def test_failure_message_points_to_the_job_log() -> None:
    failed = {"status": {"phase": "Failed", "reason": "AppFailedToStart",
                         "message": "jupyter-lab exited with status 1 before answering",
                         "logFile": "~/.hpchub/logs/hpchub-alice-lab-42.log"}}
    assert status.failure_message(failed) == (
        "AppFailedToStart: jupyter-lab exited with status 1 before answering "
        "(job log on the cluster: ~/.hpchub/logs/hpchub-alice-lab-42.log)")
    del failed["status"]["logFile"]
    assert status.failure_message(failed).endswith("before answering")
