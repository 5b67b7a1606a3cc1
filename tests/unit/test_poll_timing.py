"""When the next poll of a cluster starts: a fixed rate, with a floor, sooner after a
submission."""

from __future__ import annotations

import asyncio
import time

import pytest

from hpchub_api.models import HPCClusterSpec
from hpchub_operator.clusters import ClusterRuntime, next_wait
from hpchub_operator.handlers import _submission_or_stop


@pytest.mark.parametrize(
    ("interval", "elapsed", "wait"),
    [
        (2.0, 0.0, 2.0),  # an instant poll waits the whole interval
        (2.0, 1.2, 0.8),  # the listing's time counts toward the interval
        (2.0, 1.5, 0.5),  # exactly the floor
        (2.0, 5.0, 0.5),  # a poll longer than the interval: a quarter, never zero
        (15.0, 1.0, 14.0),
    ],
)
def test_next_wait(interval: float, elapsed: float, wait: float) -> None:
    assert next_wait(interval, elapsed) == pytest.approx(wait)


class _NeverStopped:
    """Stands in for kopf's DaemonStopped: never set, ``wait`` just sleeps."""

    def __bool__(self) -> bool:
        return False

    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _runtime() -> ClusterRuntime:
    return ClusterRuntime("c", HPCClusterSpec(), backend=None)  # type: ignore[arg-type]


async def test_a_submission_cuts_the_poll_wait_short() -> None:
    rt = _runtime()
    asyncio.get_running_loop().call_later(0.05, rt.submitted.set)
    began = time.monotonic()
    assert await _submission_or_stop(rt, _NeverStopped(), 30.0)  # type: ignore[arg-type]
    assert time.monotonic() - began < 5


async def test_without_a_submission_the_wait_runs_out() -> None:
    rt = _runtime()
    began = time.monotonic()
    assert not await _submission_or_stop(rt, _NeverStopped(), 0.2)  # type: ignore[arg-type]
    assert time.monotonic() - began >= 0.19
