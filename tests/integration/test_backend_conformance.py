"""One conformance suite for every SlurmBackend (fixture ``backend``), against real Slurm.

What the operator relies on: jobs are submitted as their user and found again by their
comment tag in one query; finished jobs report their state and exit code; cancel is
idempotent; refusals and an unreachable controller are told apart. The last section holds
the ``rest`` backend's own checks (HTTP request counts, slurmrestd's connection quirks).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hpchub_operator.backends.base import (
    JobInfo,
    JobRequest,
    JobState,
    SlurmBackend,
    SlurmRejected,
    SlurmUnavailable,
)
from hpchub_operator.backends.rest import SlurmRestBackend
from hpchub_stack.slurm import OPENAPI_VERSION, SlurmCluster

from .fixtures_backends import MONITOR_USER, rest_backend

ACTIVE = {JobState.PENDING, JobState.CONFIGURING, JobState.RUNNING}


def new_tag() -> str:
    """A comment tag no other test uses (the prefix the operator uses, plus a fresh id)."""
    return f"hpchub:conformance-{uuid.uuid4().hex}"


def job(slurm: SlurmCluster, tag: str, script: str, user: str = "alice", **extra: Any
        ) -> JobRequest:
    """A small batch job as ``user``, tagged with ``tag``."""
    fields: dict[str, Any] = {
        "user": user, "name": "hpchub-conformance", "comment": tag,
        "script": f"#!/bin/bash\n{script}\n", "working_directory": str(slurm.job_dir),
        "time_limit_minutes": 5, **extra,
    }
    return JobRequest(**fields)


async def wait_for(backend: SlurmBackend, tag: str, job_id: str,
                   done: Callable[[JobInfo], bool], within: float = 60) -> JobInfo:
    """Poll ``jobs(tag)`` until the job satisfies ``done``; return what was last seen."""
    deadline = time.monotonic() + within
    seen: JobInfo | None = None
    while time.monotonic() < deadline:
        seen = (await backend.jobs(tag)).get(job_id)
        if seen is not None and done(seen):
            return seen
        await asyncio.sleep(0.5)
    raise AssertionError(f"job {job_id} never got there; last seen: {seen}")


@pytest.fixture
async def submitted(backend: SlurmBackend) -> AsyncIterator[list[tuple[str, str]]]:
    """(job id, user) of jobs a test submits; cancelled after it, whatever happened."""
    jobs: list[tuple[str, str]] = []
    yield jobs
    for job_id, user in jobs:
        with contextlib.suppress(SlurmUnavailable):
            await backend.cancel(job_id, user)


async def submit(backend: SlurmBackend, submitted: list[tuple[str, str]],
                 request: JobRequest) -> str:
    """Submit and remember the job for cleanup."""
    job_id = await backend.submit(request)
    submitted.append((job_id, request.user))
    return job_id


# ----------------------------------------------------------------------------- conformance


async def test_submitted_job_is_listed_with_user_and_comment(
        backend: SlurmBackend, slurm: SlurmCluster, submitted: list[tuple[str, str]]) -> None:
    tag = new_tag()
    job_id = await submit(backend, submitted, job(slurm, tag, "sleep 120"))

    info = (await backend.jobs(tag))[job_id]

    assert job_id.isdigit()
    assert info.state in ACTIVE
    assert info.user == "alice"
    assert info.comment == tag
    assert info.name == "hpchub-conformance"
    assert (await backend.jobs(tag + "-other")) == {}


async def test_jobs_is_one_query_for_many_jobs(
        backend: SlurmBackend, slurm: SlurmCluster, submitted: list[tuple[str, str]]) -> None:
    tag = new_tag()
    ids = {await submit(backend, submitted, job(slurm, f"{tag}-{i}", "sleep 120"))
           for i in range(10)}
    before = await asyncio.to_thread(slurm.sdiag_counts)

    found = await backend.jobs(tag)

    after = await asyncio.to_thread(slurm.sdiag_counts)
    assert set(found) == ids
    assert after.get("REQUEST_JOB_INFO", 0) - before.get("REQUEST_JOB_INFO", 0) == 1


async def test_job_finds_one_job_and_rest_asks_for_it_alone(
        backend: SlurmBackend, slurm: SlurmCluster, submitted: list[tuple[str, str]]) -> None:
    tag = new_tag()
    job_id = await submit(backend, submitted, job(slurm, tag, "sleep 120"))
    listed = (await backend.jobs(tag))[job_id]
    before = await asyncio.to_thread(slurm.sdiag_counts)

    one = await backend.job(job_id, tag)

    after = await asyncio.to_thread(slurm.sdiag_counts)
    assert one is not None
    assert (one.job_id, one.user, one.comment, one.name) == (
        listed.job_id, listed.user, listed.comment, listed.name)
    assert one.state in ACTIVE
    if backend.single_job_query:  # not a listing of the whole queue
        assert after.get("REQUEST_JOB_INFO", 0) == before.get("REQUEST_JOB_INFO", 0)
        assert after.get("REQUEST_JOB_INFO_SINGLE", 0) > before.get(
            "REQUEST_JOB_INFO_SINGLE", 0)
    assert await backend.job(job_id, tag + "-other") is None
    assert await backend.job("999999", tag) is None


async def test_cancel_is_final_and_idempotent(
        backend: SlurmBackend, slurm: SlurmCluster, submitted: list[tuple[str, str]]) -> None:
    tag = new_tag()
    job_id = await submit(backend, submitted, job(slurm, tag, "sleep 120"))
    await wait_for(backend, tag, job_id, lambda j: j.state in ACTIVE)

    await backend.cancel(job_id, "alice")
    info = await wait_for(backend, tag, job_id, lambda j: j.state.finished)
    await backend.cancel(job_id, "alice")
    await backend.cancel("99999999", "alice")

    assert info.state is JobState.CANCELLED


async def test_cancel_of_another_users_job_is_refused(
        backend: SlurmBackend, slurm: SlurmCluster, submitted: list[tuple[str, str]]) -> None:
    tag = new_tag()
    job_id = await submit(backend, submitted, job(slurm, tag, "sleep 120"))

    with pytest.raises(SlurmRejected, match=r"(?i)denied|permission"):
        await backend.cancel(job_id, "bob")
    assert (await backend.jobs(tag))[job_id].state in ACTIVE


async def test_bad_partition_is_rejected_with_slurms_message(
        backend: SlurmBackend, slurm: SlurmCluster) -> None:
    with pytest.raises(SlurmRejected, match=r"(?i)invalid partition"):
        await backend.submit(job(slurm, new_tag(), "true", partition="no-such-partition"))


@pytest.mark.parametrize(("script", "state", "exit_code"), [
    ("true", JobState.COMPLETED, 0),
    ("exit 3", JobState.FAILED, 3),
])
async def test_finished_job_reports_state_and_exit_code(
        backend: SlurmBackend, slurm: SlurmCluster, submitted: list[tuple[str, str]],
        script: str, state: JobState, exit_code: int) -> None:
    tag = new_tag()
    job_id = await submit(backend, submitted, job(slurm, tag, script))

    info = await wait_for(backend, tag, job_id, lambda j: j.state.finished)

    assert info.state is state
    assert info.exit_code == exit_code
    assert info.first_node == slurm.nodename
    assert info.end_time is not None


async def test_job_environment_reaches_the_job_not_the_script(
        backend: SlurmBackend, slurm: SlurmCluster, submitted: list[tuple[str, str]]) -> None:
    tag = new_tag()
    out = slurm.job_dir / f"{tag.replace(':', '-')}.out"
    request = job(slurm, tag, 'printf "%s|%s" "$HPCHUB_PROBE" "$(id -un)"',
                  environment={"HPCHUB_PROBE": "a b;$(c)"}, output=str(out))
    job_id = await submit(backend, submitted, request)

    info = await wait_for(backend, tag, job_id, lambda j: j.state.finished)

    assert info.state is JobState.COMPLETED
    assert "HPCHUB_PROBE=" not in request.script
    assert await asyncio.to_thread(read_when_written, out) == "a b;$(c)|alice"


def read_when_written(path: Path, timeout: float = 10) -> str:
    """The file's text once it has some (slurmstepd may flush after the state changes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_text()
        time.sleep(0.2)
    raise AssertionError(f"{path} stayed empty")


async def test_ping_reports_version_and_partitions(backend: SlurmBackend,
                                                   slurm: SlurmCluster) -> None:
    facts = await backend.ping()
    partitions = {p.name: p for p in facts.partitions}

    assert facts.version.startswith("22.05")
    assert set(partitions) == set(slurm.partition_names)
    assert partitions["compute"].is_default
    assert partitions["compute"].state == "UP"
    assert partitions["compute"].cpus == slurm.cpus
    assert slurm.gpu_type in partitions["gpu"].gpu_types


async def test_node_address(backend: SlurmBackend, slurm: SlurmCluster) -> None:
    assert await backend.node_address(slurm.nodename) == "127.0.0.1"
    with pytest.raises(SlurmRejected, match=r"(?i)invalid node"):
        await backend.node_address("no-such-node")


async def test_controller_down_is_unavailable_not_empty(backend: SlurmBackend,
                                                        slurm: SlurmCluster) -> None:
    await asyncio.to_thread(slurm.stop_controller)
    try:
        with pytest.raises(SlurmUnavailable):
            await backend.jobs("hpchub:")
    finally:
        await asyncio.to_thread(slurm.start_controller)
    assert isinstance(await backend.jobs("hpchub:"), dict)


# ----------------------------------------------------------------------------- rest only


def request_counter() -> tuple[aiohttp.TraceConfig, list[str]]:
    """An aiohttp trace config recording "METHOD path" of every request sent."""
    sent: list[str] = []

    async def on_start(session: object, context: object,
                       params: aiohttp.TraceRequestStartParams) -> None:
        sent.append(f"{params.method} {params.url.path}")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    return trace, sent


async def test_rest_jobs_is_one_http_request(slurm: SlurmCluster) -> None:
    trace, sent = request_counter()
    backend = rest_backend(slurm, trace_configs=[trace])
    try:
        logged = slurm.rest_request_count()
        await backend.jobs("hpchub:")
    finally:
        await backend.close()

    assert sent == [f"GET /slurm/{OPENAPI_VERSION}/jobs"]
    assert slurm.rest_request_count() - logged == 1


async def test_rest_300_sequential_requests_all_succeed(slurm: SlurmCluster) -> None:
    """slurmrestd 22.05 must not run out of anything over many requests (see _new_session)."""
    trace, sent = request_counter()
    backend = rest_backend(slurm, trace_configs=[trace])
    try:
        for i in range(300):
            if i % 3 == 0:
                await backend.node_address(slurm.nodename)
            else:
                await backend.jobs("hpchub:")
        facts = await backend.ping()
    finally:
        await backend.close()

    assert len(sent) == 303
    assert facts.version.startswith("22.05")


async def test_rest_connection_close_is_garbled_by_slurmrestd(slurm: SlurmCluster) -> None:
    """Why the backend asks for keep-alive while closing each connection itself."""
    token = slurm.mint_token(MONITOR_USER, 60)
    headers = {"X-SLURM-USER-NAME": MONITOR_USER, "X-SLURM-USER-TOKEN": token}
    url = f"{slurm.rest_url}/slurm/{OPENAPI_VERSION}/ping"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)
                                     ) as session:
        with pytest.raises(aiohttp.ClientResponseError):
            async with session.get(url, headers=headers) as response:
                await response.read()


async def test_rest_unreachable_slurmrestd_is_unavailable() -> None:
    backend = rest_backend_at("http://127.0.0.1:9")
    try:
        with pytest.raises(SlurmUnavailable, match="did not answer"):
            await backend.jobs("hpchub:")
    finally:
        await backend.close()


async def test_rest_wrong_key_is_unavailable(slurm: SlurmCluster) -> None:
    """slurmctld refuses the token; slurmrestd says only "Unspecified error" (-1)."""
    backend = SlurmRestBackend(slurm.rest_url, OPENAPI_VERSION, b"w" * 32, MONITOR_USER)
    try:
        with pytest.raises(SlurmUnavailable):
            await backend.jobs("hpchub:")
    finally:
        await backend.close()


def rest_backend_at(url: str) -> SlurmBackend:
    """A rest backend pointed at ``url`` (nothing listening there), short timeout."""
    return SlurmRestBackend(url, OPENAPI_VERSION, b"k" * 32, MONITOR_USER, timeout=5)
