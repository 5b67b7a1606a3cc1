"""Integration tests run against real services, started once per session.

A service that cannot start makes the tests that need it error (never skip). When a test
fails, the tails of the logs of every service started so far are attached to its report.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from .registry import STARTED

pytest_plugins = [
    "tests.integration.fixtures_kube",
    "tests.integration.fixtures_slurm",
    "tests.integration.fixtures_services",
    "tests.integration.fixtures_operator",
    "tests.integration.fixtures_backends",
    "tests.integration.fixtures_launcher",
    "tests.integration.fixtures_hub",
]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for service in list(STARTED):
            try:
                logs = service.logs()
            except Exception as exc:
                logs = {"(logs unavailable)": repr(exc)}
            for name, text in logs.items():
                report.sections.append((f"{service.name}: {name}", text))
    return report
