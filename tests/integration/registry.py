"""Services started in this test session, so a failing test can print their logs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from hpchub_stack.base import Service

STARTED: list[Service] = []
S = TypeVar("S", bound=Service)


@contextmanager
def running(service: S) -> Iterator[S]:
    """Start a service for the session (errors, never skips), stop it at the end."""
    try:
        service.start()
    except Exception:
        service.stop()
        raise
    STARTED.append(service)
    try:
        yield service
    finally:
        STARTED.remove(service)
        service.stop()
