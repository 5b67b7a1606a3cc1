"""The launcher's pure parts: environment contract, app command line, failure text."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpchub_launch.__main__ import probe_host
from hpchub_launch.app import (
    app_environment,
    build_command,
    executable_name,
    exit_status,
    service_url,
)
from hpchub_launch.config import ConfigError, read_callback, read_config, resolve_workdir
from hpchub_launch.report import MAX_FAILURE, failure_text

UID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
BASE = {
    "HPCHUB_SERVER_UID": UID,
    "HPCHUB_CALLBACK_URL": "http://10.0.0.5:8081",
    "HPCHUB_CALLBACK_TOKEN": "t" * 64,
    "JUPYTER_TOKEN": "secret-jupyter-token",
}
HUB = {**BASE, "JUPYTERHUB_API_TOKEN": "hub-token", "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}


def test_defaults() -> None:
    config = read_config(BASE)
    assert (config.app, config.hub_mode, config.port_min, config.port_max) == (
        "jupyterlab",
        False,
        20000,
        60000,
    )
    assert (config.bind_ip, config.base_url, config.start_timeout, config.workdir) == (
        "0.0.0.0",
        "/",
        300,
        None,
    )


def test_report_url() -> None:
    callback = read_callback({**BASE, "HPCHUB_CALLBACK_URL": "https://op.example:8443/"})
    assert callback.report_url == f"https://op.example:8443/v1/servers/{UID}/report"


@pytest.mark.parametrize(
    "name", ["HPCHUB_SERVER_UID", "HPCHUB_CALLBACK_URL", "HPCHUB_CALLBACK_TOKEN"]
)
def test_callback_variables_are_required(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        read_callback({k: v for k, v in BASE.items() if k != name})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HPCHUB_SERVER_UID", "../../admin"),
        ("HPCHUB_CALLBACK_URL", "file:///etc/passwd"),
        ("HPCHUB_CALLBACK_URL", "http://user:pw@10.0.0.5"),
    ],
)
def test_bad_callback_variables(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        read_callback({**BASE, name: value})


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"HPCHUB_APP": "rstudio"}, "HPCHUB_APP"),
        ({"HPCHUB_PORT_MIN": "80"}, "HPCHUB_PORT_MIN"),
        ({"HPCHUB_PORT_MAX": "70000"}, "HPCHUB_PORT_MAX"),
        ({"HPCHUB_PORT_MIN": "30000", "HPCHUB_PORT_MAX": "29999"}, "HPCHUB_PORT_MAX"),
        ({"HPCHUB_START_TIMEOUT": "soon"}, "HPCHUB_START_TIMEOUT"),
        ({"HPCHUB_BASE_URL": "/a b/"}, "HPCHUB_BASE_URL"),
        ({"HPCHUB_WORKDIR": "relative/dir"}, "HPCHUB_WORKDIR"),
        ({"HPCHUB_WORKDIR": "$PATH/x"}, "HPCHUB_WORKDIR"),
        ({"JUPYTER_TOKEN": ""}, "JUPYTER_TOKEN"),
    ],
)
def test_bad_launch_variables(extra: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        read_config({**BASE, **extra})


def test_hub_mode_needs_no_jupyter_token_and_uses_the_service_prefix() -> None:
    config = read_config({k: v for k, v in HUB.items() if k != "JUPYTER_TOKEN"})
    assert config.hub_mode and config.base_url == "/user/alice/"
    assert read_config({**HUB, "HPCHUB_BASE_URL": "/other"}).base_url == "/other/"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/abs/dir", "/abs/dir"),
        ("~", "/home/alice"),
        ("~/project", "/home/alice/project"),
        ("$HOME/project", "/home/alice/project"),
        ("$SCRATCH/run1/", "/scratch/alice/run1"),
    ],
)
def test_workdir_placeholders(raw: str, expected: str) -> None:
    env = {"HOME": "/home/alice", "SCRATCH": "/scratch/alice"}
    assert resolve_workdir(raw, env) == Path(expected)


def test_workdir_placeholder_must_be_set() -> None:
    with pytest.raises(ConfigError, match=r"\$WORK"):
        resolve_workdir("$WORK/x", {"HOME": "/home/alice"})


def test_standalone_command_keeps_the_token_off_argv() -> None:
    config = read_config({**BASE, "HPCHUB_BASE_URL": "/lab-base"})
    argv = build_command(config, 23456, "/venv/bin/jupyter-lab")
    assert argv == [
        "/venv/bin/jupyter-lab",
        "--ip=0.0.0.0",
        "--port=23456",
        "--ServerApp.port_retries=0",
        "--no-browser",
        "--ServerApp.base_url=/lab-base/",
    ]
    assert not any("secret-jupyter-token" in arg for arg in argv)
    env = app_environment(config, BASE, 23456)
    assert env["JUPYTER_TOKEN"] == "secret-jupyter-token"
    assert "HPCHUB_CALLBACK_TOKEN" not in env


def test_hub_command_and_service_url() -> None:
    config = read_config({**HUB, "HPCHUB_APP": "notebook"})
    assert executable_name(config) == "jupyterhub-singleuser"
    assert build_command(config, 23456, "/x/jupyterhub-singleuser")[1:3] == [
        "--ip=0.0.0.0",
        "--port=23456",
    ]
    env = app_environment(config, {**HUB, "JUPYTERHUB_SERVICE_URL": "http://:0/user/alice/"}, 23456)
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://0.0.0.0:23456/user/alice/"
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/tree"


@pytest.mark.parametrize(
    ("given", "ip", "expected"),
    [
        ("", "0.0.0.0", "http://0.0.0.0:20001/user/alice/"),
        ("https://old:8888/user/alice/", "10.1.2.3", "https://10.1.2.3:20001/user/alice/"),
        ("", "::", "http://[::]:20001/user/alice/"),
    ],
)
def test_service_url(given: str, ip: str, expected: str) -> None:
    assert service_url(given, ip, 20001, "/user/alice/") == expected


@pytest.mark.parametrize(
    ("bind", "host"),
    [
        ("0.0.0.0", "127.0.0.1"),
        ("::", "[::1]"),
        ("10.1.2.3", "10.1.2.3"),
        ("fe80::1", "[fe80::1]"),
    ],
)
def test_probe_host(bind: str, host: str) -> None:
    assert probe_host(bind) == host


def test_exit_status_of_a_killed_app() -> None:
    assert (exit_status(0), exit_status(3), exit_status(-15), exit_status(-9)) == (0, 3, 143, 137)


def test_failure_text_keeps_the_end_of_stderr_on_one_printable_line() -> None:
    lines = [f"line {i} \x1b[31mred\x1b[0m" for i in range(200)] + ["ImportError: no x"]
    text = failure_text("jupyter-lab exited with status 1 before answering", lines)
    assert len(text) <= MAX_FAILURE and text.isprintable()
    assert text.startswith("jupyter-lab exited with status 1 before answering; stderr: ...")
    assert text.endswith("ImportError: no x")


def test_failure_text_without_stderr() -> None:
    assert failure_text("no\nnewline", []) == "no?newline"
