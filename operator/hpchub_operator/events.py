"""Kubernetes Events, posted in the background: a status write never waits for its Event.

The status is the record; an Event is what ``kubectl describe`` shows a human. Posting one
took as long as the status patch itself when the API server was busy, and it happened while
the server's lock was held, so a job-started hint waited behind the Event of the
submission. Here each object's Events go through one lane (picked by its uid) and keep their
order; a few lanes post side by side. A full lane drops the Event (logged and counted)
rather than grow without bound while the API server is away.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("hpchub.events")

Post = Callable[[dict[str, Any], str, str, str, dt.datetime], Awaitable[None]]
"""Posts one Event: (object, reason, message, type, when it happened)."""

LANES = 4
CAPACITY = 2000
"""Events waiting per lane; one more is dropped."""
CLOSE_GRACE = 5.0
"""Seconds ``close`` lets the lanes finish what they hold."""


@dataclass(frozen=True)
class _Event:
    obj: dict[str, Any]
    reason: str
    message: str
    type_: str
    at: dt.datetime


class EventLanes:
    """Queues Events and posts them from a few background tasks, in order per object."""

    def __init__(self, post: Post, lanes: int = LANES, capacity: int = CAPACITY,
                 on_drop: Callable[[], None] = lambda: None) -> None:
        self._post = post
        self._queues: list[asyncio.Queue[_Event]] = [asyncio.Queue(capacity)
                                                     for _ in range(lanes)]
        self._tasks: list[asyncio.Task[None]] = []
        self._on_drop = on_drop
        self._closed = False

    def submit(self, obj: dict[str, Any], reason: str, message: str,
               type_: str = "Normal") -> None:
        """Queue an Event about ``obj``, stamped now; returns at once (call from the event
        loop)."""
        if self._closed:
            return
        if not self._tasks:
            self._tasks = [asyncio.get_running_loop().create_task(self._run(q))
                           for q in self._queues]
        uid = str(obj.get("metadata", {}).get("uid") or obj.get("metadata", {}).get("name"))
        queue = self._queues[zlib.crc32(uid.encode()) % len(self._queues)]
        try:
            queue.put_nowait(_Event(obj, reason, message, type_, dt.datetime.now(dt.UTC)))
        except asyncio.QueueFull:
            self._on_drop()
            log.warning("event %s for %s dropped: %d events already wait", reason,
                        obj.get("metadata", {}).get("name"), queue.qsize())

    async def _run(self, queue: asyncio.Queue[_Event]) -> None:
        while True:
            ev = await queue.get()
            try:
                await self._post(ev.obj, ev.reason, ev.message, ev.type_, ev.at)
            except Exception as exc:  # an Event is information, never a reason to stop
                log.warning("could not post event %s for %s: %s", ev.reason,
                            ev.obj.get("metadata", {}).get("name"), exc)
            finally:
                queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued Event has been posted (or has failed)."""
        await asyncio.gather(*(q.join() for q in self._queues))

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Stop taking Events, post what waits for up to ``grace`` seconds, then stop."""
        self._closed = True
        if self._tasks:
            try:
                await asyncio.wait_for(self.drain(), grace)
            except TimeoutError:
                left = sum(q.qsize() for q in self._queues)
                log.warning("%d events not posted at shutdown", left)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
