"""Crafted values through the real runners: sshd with the stack's CA, and sudo.

Each value either arrives on the other side byte for byte (an inert literal: no shell
expanded, split or ran any part of it) or is refused before anything runs, with a message.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hpchub_operator.backends import cli
from hpchub_operator.backends.base import SlurmRejected
from hpchub_operator.runners import CommandRunner, SshRunner, SudoRunner
from hpchub_stack.sshd import SSHServer

from .fixtures_backends import ssh_runner

CRAFTED = [
    "x; touch /tmp/hpchub-pwned",
    "$(touch /tmp/hpchub-pwned)",
    "`touch /tmp/hpchub-pwned`",
    "-n",
    "--help",
    "#SBATCH --partition=admin",
    "a b  c",
    "'; touch /tmp/hpchub-pwned; '",
    '"; touch /tmp/hpchub-pwned; "',
    "${IFS}x",
    "a|touch /tmp/hpchub-pwned",
    "a&&touch /tmp/hpchub-pwned",
    ">/tmp/hpchub-pwned",
    "*",
    "~root",
    "\\\\",
    "\u0430lice",  # Cyrillic a
    "a\uff1btouch /tmp/hpchub-pwned",  # fullwidth semicolon
    "\u2028x",  # line separator (not a newline for the shell)
    "",
]
PWNED = Path("/tmp/hpchub-pwned")
REFUSED = ["a\nb", "x\n#SBATCH --account=other", "a\rb", "a\x1bb"]


@pytest.fixture(params=["ssh", "sudo"])
async def runner(request: pytest.FixtureRequest, unix_users: None) -> CommandRunner:
    if request.param == "ssh":
        sshd: SSHServer = request.getfixturevalue("sshd")
        made: SshRunner | SudoRunner = ssh_runner(sshd)
    else:
        made = SudoRunner()
    return made


async def test_crafted_argv_items_arrive_as_literals(runner: CommandRunner) -> None:
    done = await runner.run("alice", ["printf", "%s\\0", *CRAFTED])
    assert done.exit_status == 0, done.error_text
    assert done.stdout.decode().split("\0")[:-1] == CRAFTED
    assert not await asyncio.to_thread(PWNED.exists)


async def test_crafted_environment_values_arrive_as_literals(runner: CommandRunner) -> None:
    env = {f"HPCHUB_PROBE_{i}": value for i, value in enumerate(CRAFTED)}
    done = await runner.run("alice", cli.with_environment(["env", "-0"]),
                            stdin=cli.environment_preamble(env))
    assert done.exit_status == 0, done.error_text
    seen = dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if item)
    assert {k: seen.get(k) for k in env} == env
    assert not await asyncio.to_thread(PWNED.exists)


@pytest.mark.parametrize("value", REFUSED)
def test_values_with_control_characters_are_refused(value: str) -> None:
    with pytest.raises(SlurmRejected, match="control characters"):
        cli.environment_preamble({"HPCHUB_PROBE": value})


async def test_crafted_users_never_reach_a_runner(runner: CommandRunner) -> None:
    for user in ["alice; id", "-oProxyCommand=id", "$(id)", "\u0430lice", "alice\n"]:
        with pytest.raises(ValueError, match="not a user name"):
            await runner.run(user, ["true"])
