"""What the backends share: running a command and reading an answer, errors mapped.

A runner's failures and a parser's ``ValueError`` become the backend errors of
:mod:`.base`, the same way in every backend: refused input is final, anything the operator
could not run or read leaves the state unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

from ..runners import CommandResult, CommandRunner, HostKeyMismatch, RunnerError
from .base import AccessRefused, SlurmRejected, SlurmUnavailable

P = ParamSpec("P")
T = TypeVar("T")


async def run_command(runner: CommandRunner, user: str, argv: Sequence[str], what: str, *,
                      stdin: bytes | None, max_seconds: float,
                      refuse_on_host_key: bool) -> CommandResult:
    """Run ``argv`` as ``user``; a changed host key refuses a submission (final) and makes
    anything else AccessRefused; a command that could not run is SlurmUnavailable."""
    try:
        return await runner.run(user, argv, stdin=stdin, max_seconds=max_seconds)
    except ValueError as exc:
        raise SlurmRejected(f"{what}: {exc}") from exc
    except HostKeyMismatch as exc:
        if refuse_on_host_key:
            raise SlurmRejected(f"{what}: {exc}") from exc
        raise AccessRefused(f"{what}: {exc}") from exc
    except RunnerError as exc:
        raise SlurmUnavailable(f"{what}: {exc}") from exc


def parsed(source: str, parser: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a parser of ``source`` (e.g. "Slurm output"); an answer it cannot read leaves
    the state unknown (SlurmUnavailable)."""
    try:
        return parser(*args, **kwargs)
    except ValueError as exc:
        raise SlurmUnavailable(f"unreadable {source}: {exc}") from exc
