"""EventLanes: Events leave in the background, in order per object, bounded, never raising."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from hpchub_operator.events import EventLanes


def obj(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"}}


class Poster:
    """Records posts; a post waits for ``gate`` when one is set, fails for reason 'bad'."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None
        self.stamps: list[dt.datetime] = []

    async def __call__(self, o: dict[str, Any], reason: str, message: str, type_: str,
                       at: dt.datetime) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        if reason == "bad":
            raise RuntimeError("API server said no")
        self.posted.append((o["metadata"]["name"], reason))
        self.stamps.append(at)


async def test_submit_returns_before_the_post_and_order_is_kept_per_object() -> None:
    poster = Poster()
    poster.gate = asyncio.Event()
    lanes = EventLanes(poster, lanes=3)
    for reason in ("Submitted", "Queued", "Starting", "Running"):
        for name in ("a", "b", "c", "d"):
            lanes.submit(obj(name), reason, reason)
    assert poster.posted == []  # nothing waited for the API server
    queued_by = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.05)
    poster.gate.set()
    await lanes.drain()
    assert all(at <= queued_by for at in poster.stamps)  # stamped when it happened
    for name in ("a", "b", "c", "d"):
        assert [r for n, r in poster.posted if n == name] == [
            "Submitted", "Queued", "Starting", "Running"]
    await lanes.close()


async def test_a_failed_post_is_logged_and_the_lane_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    poster = Poster()
    lanes = EventLanes(poster, lanes=1)
    lanes.submit(obj("a"), "bad", "x")
    lanes.submit(obj("a"), "Running", "x")
    await lanes.drain()
    assert poster.posted == [("a", "Running")]
    assert "could not post event bad for a: API server said no" in caplog.text
    await lanes.close()


async def test_a_full_lane_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    poster = Poster()
    poster.gate = asyncio.Event()
    dropped: list[int] = []
    lanes = EventLanes(poster, lanes=1, capacity=2, on_drop=lambda: dropped.append(1))
    lanes.submit(obj("a"), "R0", "x")
    await asyncio.sleep(0)  # the lane takes R0 and waits at the gate
    for i in range(1, 5):
        lanes.submit(obj("a"), f"R{i}", "x")  # R1 and R2 fit, R3 and R4 do not
    assert len(dropped) == 2 and "event R4 for a dropped" in caplog.text
    poster.gate.set()
    await lanes.drain()
    assert [r for _, r in poster.posted] == ["R0", "R1", "R2"]
    await lanes.close()


async def test_close_posts_what_waits_then_takes_no_more() -> None:
    poster = Poster()
    lanes = EventLanes(poster, lanes=2)
    lanes.submit(obj("a"), "Stopped", "x")
    await lanes.close()
    assert poster.posted == [("a", "Stopped")]
    lanes.submit(obj("a"), "Late", "x")
    await asyncio.sleep(0)
    assert poster.posted == [("a", "Stopped")]


async def test_close_gives_up_after_its_grace(caplog: pytest.LogCaptureFixture) -> None:
    poster = Poster()
    poster.gate = asyncio.Event()  # never set: the API server does not answer
    lanes = EventLanes(poster, lanes=1)
    lanes.submit(obj("a"), "Stopped", "x")
    lanes.submit(obj("a"), "Gone", "x")
    await lanes.close(grace=0.05)
    assert poster.posted == [] and "events not posted at shutdown" in caplog.text
