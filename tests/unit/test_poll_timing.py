"""When the next poll of a cluster starts: a fixed rate, with a floor."""

from __future__ import annotations

import pytest

from hpchub_operator.clusters import next_wait


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
