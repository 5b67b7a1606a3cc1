"""The command-line backends' pure parts: argv building, output parsers, error
classification, the login-node listing, and crafted values that try to inject."""

from __future__ import annotations

import datetime as dt
import shlex

import pytest

from hpchub_operator.backends import cli, login
from hpchub_operator.backends.base import (
    JobRequest,
    JobState,
    SlurmRejected,
    SlurmUnavailable,
)
from hpchub_operator.runners import CommandResult, checked_argv, remote_command


def result(code: int, stderr: str = "", stdout: str = "") -> CommandResult:
    return CommandResult(code, stdout.encode(), stderr.encode())


def request(**extra: object) -> JobRequest:
    fields: dict[str, object] = {"user": "alice", "name": "hpchub-lab", "comment": "hpchub:u1",
                                 "script": "#!/bin/bash\ntrue\n"}
    fields.update(extra)
    return JobRequest(**fields)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- sbatch


def test_sbatch_argv_has_one_item_per_option() -> None:
    argv = cli.sbatch_argv(request(partition="gpu", account="proj-a", gres="gpu:a100:2",
                                   memory_mb=2048, constraint="a100&ib", qos="normal"))
    assert argv[:4] == ["sbatch", "--parsable", "--export=ALL", "--no-requeue"]
    assert "--job-name=hpchub-lab" in argv and "--comment=hpchub:u1" in argv
    assert {"--partition=gpu", "--account=proj-a", "--gres=gpu:a100:2", "--mem=2048M",
            "--constraint=a100&ib", "--qos=normal"} <= set(argv)
    assert all(item.startswith("-") for item in argv[1:])


@pytest.mark.parametrize(("stdout", "job_id"), [
    ("123\n", "123"), ("123;hpchub\n", "123"), ("  7 \n", "7"),
])
def test_parse_sbatch(stdout: str, job_id: str) -> None:
    assert cli.parse_sbatch(stdout) == job_id


@pytest.mark.parametrize("stdout", ["", "Submitted batch job 12", "abc;x"])
def test_parse_sbatch_without_id(stdout: str) -> None:
    with pytest.raises(ValueError, match="no job id"):
        cli.parse_sbatch(stdout)


@pytest.mark.parametrize(("code", "stderr", "expected"), [
    (0, "", None),
    (1, "sbatch: error: Batch job submission failed: Invalid partition name specified",
     SlurmRejected),
    (1, "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
        "(connect failure)", SlurmUnavailable),
    (1, "slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
     SlurmUnavailable),
    (1, "slurm_load_jobs error: Socket timed out on send/recv operation", SlurmUnavailable),
    (1, "sbatch: error: Connection refused", SlurmUnavailable),
    (1, "squeue: error: Zero Bytes were transmitted or received", SlurmUnavailable),
    (1, "sbatch: error: Munge encode failed: Failed to access munge.socket",
     SlurmUnavailable),
    (1, "scancel: error: Kill job error on job id 5: Access/permission denied",
     SlurmRejected),
    (127, "bash: sbatch: command not found", SlurmUnavailable),
    (255, "", SlurmUnavailable),
    (210, "scancel: error: Kill job error on job id 5: Access/permission denied",
     SlurmRejected),
    (cli.ENV_PROTOCOL_ERROR, "", SlurmUnavailable),
    (1, "sbatch: error: invalid partition specified: x", SlurmRejected),
])
def test_classify(code: int, stderr: str, expected: type[Exception] | None) -> None:
    error = cli.classify("op", result(code, stderr))
    assert (error is None) if expected is None else isinstance(error, expected)


@pytest.mark.parametrize("stderr", [
    "scancel: error: Kill job error on job id 9: Invalid job id specified",
    "scancel: error: Kill job error on job id 9: Job/step already completing or completed",
])
def test_cancel_of_a_gone_job_is_done(stderr: str) -> None:
    assert cli.classify_cancel("cancel", result(1, stderr)) is None


def test_cancel_when_the_controller_is_down_is_unavailable() -> None:
    error = cli.classify_cancel("cancel", result(1, "Unable to contact slurm controller"))
    assert isinstance(error, SlurmUnavailable)


def test_squeue_json_with_errors_is_unavailable_not_empty() -> None:
    """squeue --json exits 0 with an empty job list when slurmctld is down (recorded)."""
    body = {"meta": {}, "jobs": [], "errors": [{
        "description": "Failed while looking for jobs", "error_number": -1,
        "error": "Unspecified error", "source": "slurm_load_jobs"}]}
    with pytest.raises(SlurmUnavailable, match="Failed while looking for jobs"):
        cli.checked_json(body, "list jobs")
    assert cli.checked_json({"jobs": [], "errors": []}, "list jobs") == {"jobs": [],
                                                                         "errors": []}


# ----------------------------------------------------------------------------- scontrol

PARTITIONS = (
    "PartitionName=compute AllowGroups=ALL Default=YES MaxTime=01:00:00 DefaultTime=NONE "
    "State=UP TotalCPUs=8 TotalNodes=1 TRES=cpu=8,mem=23593M,node=1,billing=8\n"
    "PartitionName=gpu Default=NO MaxTime=UNLIMITED State=DOWN TotalCPUs=4 TotalNodes=2 "
    "JobDefaults=(null) TRES=cpu=4\n"
)


def test_parse_partitions() -> None:
    compute, gpu = cli.parse_partitions(PARTITIONS, {"gpu": {"a100"}})
    assert (compute.name, compute.is_default, compute.max_time_limit, compute.cpus,
            compute.memory_mb, compute.state) == ("compute", True, "1:00:00", 8, 23593, "UP")
    assert (gpu.name, gpu.is_default, gpu.max_time_limit, gpu.nodes, gpu.gpu_types,
            gpu.state) == ("gpu", False, None, 2, ("a100",), "DOWN")


def test_parse_key_values_keeps_spaces_in_values() -> None:
    kv = cli.parse_key_values("NodeName=n1 Reason=down for maint [root@x] NodeAddr=10.0.0.1")
    assert kv == {"NodeName": "n1", "Reason": "down for maint [root@x]",
                  "NodeAddr": "10.0.0.1"}


def test_parse_node_address() -> None:
    text = "NodeName=vm Arch=x86_64 NodeAddr=127.0.0.1 NodeHostName=vm Version=22.05.8\n"
    assert cli.parse_node_address(text, "vm") == "127.0.0.1"
    with pytest.raises(ValueError, match="not in"):
        cli.parse_node_address(text, "other")


# ----------------------------------------------------------------------------- login nodes


def listing(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


def rec(owner: str = "alice", under: str = "alice", tag: str = "hpchub:u1",
        pid: str = "4133", exit_code: str = "", cancelled: str = "",
        timeout: str = "") -> str:
    return "\t".join(["R", owner, under, tag, pid, "hpchub-lab", "1795700000", "3600",
                      exit_code, cancelled, timeout])


@pytest.mark.parametrize(("record", "alive", "state", "exit_code", "signal"), [
    (rec(), True, JobState.RUNNING, None, None),
    (rec(exit_code="0"), False, JobState.COMPLETED, 0, None),
    (rec(exit_code="3"), False, JobState.FAILED, 3, None),
    (rec(exit_code="143", cancelled="1"), False, JobState.CANCELLED, None, 15),
    (rec(exit_code="143", timeout="1"), False, JobState.TIMEOUT, None, 15),
    (rec(), False, JobState.FAILED, None, None),
    (rec(cancelled="1"), False, JobState.CANCELLED, None, None),
])
def test_parse_listing_states(record: str, alive: bool, state: JobState,
                              exit_code: int | None, signal: int | None) -> None:
    ps = "P\t4133\talice\thpchub:u1" if alive else "P\t4133\tbob\thpchub:u1"
    found = login.parse_listing(listing(record, ps), "login1", "hpchub:")
    info = found["login:login1:4133"]
    assert (info.state, info.exit_code, info.signal) == (state, exit_code, signal)
    assert (info.user, info.comment, info.nodes, info.first_node) == (
        "alice", "hpchub:u1", "login1", "login1")
    assert info.start_time == dt.datetime.fromtimestamp(1795700000, tz=dt.UTC)
    assert info.time_limit_minutes == 60


def test_parse_listing_ignores_spoofed_and_foreign_records() -> None:
    text = listing(rec(owner="mallory", under="alice"), rec(tag="other:u2", pid="77"),
                   "P\t4133\tmallory\thpchub:u1")
    assert login.parse_listing(text, "login1", "hpchub:") == {}


def test_parse_listing_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="unexpected line"):
        login.parse_listing("R\tonly\ttwo\n", "login1", "hpchub:")


@pytest.mark.parametrize("value", ["login:n1", "login:n1:x", "12345", "login::5",
                                   "slurm:n1:5", "login:n1:1", "login:a:b:5"])
def test_split_job_id_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="not a login-node job id"):
        login.split_job_id(value)


def test_job_id_round_trip_and_node_choice() -> None:
    assert login.split_job_id(login.job_id("login1", 4133)) == ("login1", 4133)
    assert login.pick_node(["a", "b"], "b", "hpchub:x") == "b"
    assert login.pick_node(["a", "b"], None, "hpchub:x") == login.pick_node(
        ["a", "b"], None, "hpchub:x")
    with pytest.raises(SlurmRejected, match="not one of"):
        login.pick_node(["a"], "c", "hpchub:x")


# ----------------------------------------------------------------------------- injection

CRAFTED = [
    "x; rm -rf ~",
    "$(id)",
    "`id`",
    "a\nb",
    "line\n#SBATCH --partition=admin",
    "#SBATCH --account=other",
    "-rf",
    "--partition=admin",
    "a b",
    "'quoted'",
    '"double"',
    "a|b",
    "a&b",
    "a>/etc/passwd",
    "${HOME}",
    "$HOME",
    "\\",
    "a\rb",
    "a\x00b",
    "\u0430lice",  # Cyrillic a
    "\uff43\uff4f\uff4d\uff50\uff55\uff54\uff45",  # fullwidth "compute"
    "a\uff1bb",  # fullwidth semicolon
    "a\u2215b",  # division slash, looks like "/"
    "*",
    "~root",
    "a\tb",
]


@pytest.mark.parametrize("value", CRAFTED)
def test_crafted_user_names_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a user name"):
        checked_argv(value, ["squeue"])


@pytest.mark.parametrize("value", CRAFTED)
def test_crafted_scheduler_options_are_refused(value: str) -> None:
    for field in ("partition", "account", "qos", "reservation", "constraint", "name",
                  "comment", "working_directory", "output"):
        if field == "constraint" and value in ("a|b", "a&b"):  # Slurm's own syntax:
            argv = cli.sbatch_argv(request(constraint=value))  # one literal argv item
            assert f"--constraint={value}" in argv
            continue
        with pytest.raises(SlurmRejected, match="value not allowed"):
            cli.sbatch_argv(request(**{field: value}))


@pytest.mark.parametrize("value", CRAFTED)
def test_crafted_environment_values_are_refused_or_one_literal_line(value: str) -> None:
    try:
        pre = cli.environment_preamble({"HPCHUB_PROBE": value})
    except SlurmRejected as exc:
        assert "control characters" in str(exc)
        assert any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
        return
    assert pre.decode() == f"1\nHPCHUB_PROBE={value}\n"


@pytest.mark.parametrize("value", CRAFTED)
def test_crafted_environment_names_are_refused(value: str) -> None:
    with pytest.raises(SlurmRejected):
        cli.environment_preamble({value: "x"})


@pytest.mark.parametrize("name", ["SBATCH_PARTITION", "SLURM_CONF", "BASH_ENV", "LD_PRELOAD",
                                  "PATH", "BASH_FUNC_x%%", "IFS"])
def test_environment_that_steers_sbatch_or_the_shell_is_refused(name: str) -> None:
    with pytest.raises(SlurmRejected):
        cli.environment_preamble({name: "x"})


@pytest.mark.parametrize("value", [v for v in CRAFTED if "\x00" not in v])
def test_remote_command_carries_every_item_as_one_literal(value: str) -> None:
    argv = ["scancel", value, "--", value]
    assert shlex.split(remote_command(argv)) == argv


def test_login_agent_refuses_crafted_request_fields() -> None:
    for field, value in [("comment", "hpchub:x; id"), ("name", "$(id)"),
                         ("working_directory", "/tmp/`id`"), ("output", "/tmp/a\nb")]:
        with pytest.raises(SlurmRejected, match="value not allowed"):
            cli.sbatch_argv(request(**{field: value}))


def test_argv_never_starts_with_an_option() -> None:
    with pytest.raises(ValueError, match="not a command"):
        checked_argv("alice", ["-oProxyCommand=id"])
    with pytest.raises(ValueError, match="not a command"):
        checked_argv("alice", [])
