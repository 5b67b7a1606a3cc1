"""The ``rest`` backend: slurmrestd (openapi v0.0.38, Slurm 22.05) with per-request JWTs.

Every request carries a fresh short-lived token for the user it acts as: the job's owner for
``submit`` and ``cancel``, a monitoring user for the cluster-wide reads. The module is split
in two: pure functions that build request bodies and read responses (table-tested against
responses recorded from a real slurmrestd, ``tests/unit/data``), and the small
:class:`SlurmRestBackend` that does the HTTP.

What slurmrestd 22.05 answers, as recorded:

* A refusal by slurmctld is HTTP **500** (not 4xx) with Slurm's errno in the ``errors``
  list, e.g. ``{"error_code": 2000, "error": "Invalid partition name specified"}``. The key
  holding the number differs per endpoint: ``error_code`` (submit), ``error_number``
  (jobs, cancel), ``errno`` (nodes, partitions).
* A controller that is down or hung is also HTTP 500, after slurmrestd's own ~10 s retry,
  with errno 1800 (submit, cancel) or ``-1`` "Unspecified error" (jobs, ping, partitions,
  nodes). A token slurmctld does not accept (wrong key, expired) gives the same ``-1``.
* A submission slurmctld accepts but cannot run (time limit above the partition's) is
  HTTP 200 with a ``job_id`` *and* an error (2015): the job exists and stays pending.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from hpchub_api import patterns

from ..slurmjwt import mint_token
from .base import (
    BackendError,
    ClusterFacts,
    JobInfo,
    JobRequest,
    JobState,
    PartitionFacts,
    SlurmRejected,
    SlurmUnavailable,
)
from .common import parsed

log = logging.getLogger(__name__)
_UNREADABLE = "slurmrestd response"
"""What an unreadable answer is called in SlurmUnavailable's message."""

# Slurm errnos (slurm_errno.h, 22.05) meaning "could not get an answer": the state is unknown.
_UNAVAILABLE_ERRNOS = frozenset(
    {
        -1,  # "Unspecified error": slurmrestd's answer when slurmctld is down or refuses auth
        *range(1000, 1014),  # SLURM_UNEXPECTED_MSG_ERROR .. SLURM_MISSING_SOCKET_ERROR
        *range(1800, 1805),  # SLURMCTLD_COMMUNICATIONS_*: controller unreachable
        *range(5000, 5006),  # SLURM_PROTOCOL_SOCKET_*: timeouts, short reads
        *range(6000, 6010),  # ESLURM_AUTH_*: our token or key is wrong (cluster config)
        2007,  # ESLURM_ERROR_ON_DESC_TO_RECORD_COPY: "Unable to create job record, try again"
        2020,  # ESLURM_TRANSITION_STATE_NO_UPDATE: "try again later"
        2027,  # ESLURM_IN_STANDBY_MODE: backup controller in standby
        2131,  # ESLURM_IN_STANDBY_USE_BACKUP
        7000,  # ESLURM_DB_CONNECTION: slurmdbd unreachable
    }
)
# A cancel of a job Slurm no longer knows or that has already ended is done, not an error.
_GONE_ERRNOS = frozenset({2017, 2021, 2084})  # INVALID_JOB_ID, ALREADY_DONE, JOB_FINISHED
_NO_VALUE = 0xFFFFFFFF  # Slurm's NO_VAL / INFINITE for 32-bit fields
_NODE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$"  # safe as one URL path segment
DEFAULT_JOB_PATH = "/usr/local/bin:/usr/bin:/bin"
"""PATH given to jobs whose request names none (a REST job inherits no environment)."""


# ----------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class RestError:
    """One entry of a slurmrestd ``errors`` list."""

    errno: int | None
    message: str


def response_errors(body: Any) -> list[RestError]:
    """The ``errors`` list of a slurmrestd response, whichever key holds the errno."""
    if not isinstance(body, Mapping):
        return []
    errors = []
    for raw in body.get("errors") or []:
        if not isinstance(raw, Mapping):
            continue
        code = next((raw[k] for k in ("error_code", "error_number", "errno") if k in raw), None)
        text = str(raw.get("description") or raw.get("error") or "unknown error")
        errors.append(RestError(code if isinstance(code, int) else None, text))
    return errors


def classify(status: int, body: Any, what: str) -> BackendError | None:
    """The error a response stands for, or None when it is a success.

    Any errno in the unavailable set (or a 5xx without a Slurm errno) means the state is
    unknown; any other Slurm errno on a failed response is a final refusal.
    """
    if status < 400:
        return None  # errors next to a result are warnings (see parse_submit's caller)
    errors = response_errors(body)
    message = "; ".join(e.message for e in errors)
    if any(e.errno is None or e.errno in _UNAVAILABLE_ERRNOS for e in errors) or not errors:
        detail = message or _short_text(body) or f"HTTP {status}"
        return SlurmUnavailable(f"{what}: no usable answer from Slurm (HTTP {status}: {detail})")
    return SlurmRejected(f"{what}: {message}")


def classify_cancel(status: int, body: Any, what: str) -> BackendError | None:
    """Like :func:`classify`, but a job Slurm no longer knows or that already ended is done."""
    if any(e.errno in _GONE_ERRNOS for e in response_errors(body)):
        return None
    return classify(status, body, what)


def _short_text(body: Any) -> str:
    """A non-JSON body (e.g. ``Authentication failure``) as one short line."""
    if isinstance(body, str):
        return " ".join(body.split())[:200]
    return ""


# ----------------------------------------------------------------------------- requests


def submission(request: JobRequest) -> dict[str, Any]:
    """The ``POST /job/submit`` body for a request (options in JSON, never in the script).

    ``requeue`` is off: a server that Slurm silently restarts elsewhere would lose its
    clients; the operator decides what happens after a node failure.
    """
    job: dict[str, Any] = {
        "name": request.name,
        "comment": request.comment,
        "nodes": request.nodes,
        "cpus_per_task": request.cpus_per_task,
        "time_limit": request.time_limit_minutes,
        "current_working_directory": request.working_directory,
        "standard_output": request.output,
        "requeue": False,
        "environment": {"PATH": DEFAULT_JOB_PATH, **request.environment},
    }
    optional = {
        "partition": request.partition,
        "account": request.account,
        "qos": request.qos,
        "reservation": request.reservation,
        "constraints": request.constraint,
        "gres": request.gres,
        "memory_per_node": request.memory_mb,
    }
    job.update({k: v for k, v in optional.items() if v is not None})
    return {"job": job, "script": request.script}


# ----------------------------------------------------------------------------- responses


def parse_submit(body: Any) -> str:
    """The job id of a successful submission."""
    job_id = body.get("job_id") if isinstance(body, Mapping) else None
    if not isinstance(job_id, int):
        raise ValueError("submission response without a job_id")
    return str(job_id)


def parse_jobs(body: Any, tag_prefix: str) -> dict[str, JobInfo]:
    """Jobs of a ``GET /jobs`` response whose comment starts with ``tag_prefix``, by id.

    A malformed entry raises ValueError rather than being skipped: a job left out would
    read as "gone", which the operator must never conclude from a bad answer.
    """
    raw_jobs = body.get("jobs") if isinstance(body, Mapping) else None
    if not isinstance(raw_jobs, list):
        raise ValueError("jobs response without a jobs list")
    found = {}
    for raw in raw_jobs:
        if not isinstance(raw, Mapping):
            raise ValueError("jobs entry is not an object")
        if str(raw.get("comment") or "").startswith(tag_prefix):
            info = parse_job(raw)
            found[info.job_id] = info
    return found


def parse_job(raw: Mapping[str, Any]) -> JobInfo:
    """One job of a ``GET /jobs`` response (v0.0.38 field names) as a JobInfo."""
    job_id = raw.get("job_id")
    if not isinstance(job_id, int):
        raise ValueError(f"job without a numeric job_id: {job_id!r}")
    state = JobState.parse(raw.get("job_state"))
    exit_code, signal = _exit_status(raw.get("exit_code")) if state.finished else (None, None)
    reason = str(raw.get("state_reason") or "")
    return JobInfo(
        job_id=str(job_id),
        user=str(raw.get("user_name") or raw.get("user_id") or ""),
        state=state,
        comment=str(raw.get("comment") or ""),
        name=str(raw.get("name") or ""),
        reason="" if reason == "None" else reason,
        nodes=str(raw.get("nodes") or ""),
        exit_code=exit_code,
        signal=signal,
        submit_time=_timestamp(raw.get("submit_time")),
        start_time=_timestamp(raw.get("start_time")),
        end_time=_timestamp(raw.get("end_time")),
        time_limit_minutes=_number(raw.get("time_limit")),
    )


def _exit_status(raw: Any) -> tuple[int | None, int | None]:
    """(exit code, signal) from a wait(2) status as v0.0.38 reports it (3 -> 768)."""
    if isinstance(raw, Mapping):  # v0.0.39+: {"status": ..., "return_code": .., "signal": ..}
        signal = _number((raw.get("signal") or {}).get("signal_id"))
        return _number(raw.get("return_code")), signal or None
    status = _number(raw)
    if status is None:
        return None, None
    signal = status & 0x7F
    return (status >> 8) & 0xFF, signal or None


def _number(raw: Any) -> int | None:
    """A Slurm integer: plain, or v0.0.39's ``{"set", "infinite", "number"}``; unset -> None."""
    if isinstance(raw, Mapping):
        if not raw.get("set", True) or raw.get("infinite"):
            return None
        raw = raw.get("number")
    if isinstance(raw, bool) or not isinstance(raw, int) or raw in (_NO_VALUE, -1):
        return None
    return raw


def _timestamp(raw: Any) -> dt.datetime | None:
    """An epoch time as an aware datetime; 0 and unset mean "none"."""
    seconds = _number(raw)
    if not seconds:
        return None
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def parse_version(body: Any) -> str:
    """Slurm's release (``22.05.8``) from any response's ``meta``."""
    meta = body.get("meta") if isinstance(body, Mapping) else None
    slurm = (meta or {}).get("Slurm") or {}
    if slurm.get("release"):
        return str(slurm["release"])
    version = slurm.get("version") or {}
    if not version:
        raise ValueError("response without meta.Slurm version")
    return f"{version.get('major')}.{int(version.get('minor', 0)):02d}.{version.get('micro')}"


def parse_ping(body: Any) -> None:
    """Check that the controller answered ``UP`` (raises SlurmUnavailable otherwise)."""
    pings = body.get("pings") if isinstance(body, Mapping) else None
    states = [str(p.get("ping", "")) for p in pings or [] if isinstance(p, Mapping)]
    if "UP" not in states:
        raise SlurmUnavailable(f"slurmctld does not answer ping (pings: {states or 'none'})")


def parse_cluster_facts(ping: Any, partitions: Any, nodes: Any) -> ClusterFacts:
    """Version and partitions (with the GPU types of their nodes) from three responses."""
    gpus_by_partition = _gpu_types_by_partition(_list(nodes, "nodes"))
    facts = tuple(
        _partition(raw, gpus_by_partition.get(str(raw.get("name")), ()))
        for raw in _list(partitions, "partitions")
    )
    return ClusterFacts(version=parse_version(ping), partitions=facts)


def _list(body: Any, key: str) -> list[Mapping[str, Any]]:
    items = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        raise ValueError(f"response without a {key} list")
    return [item for item in items if isinstance(item, Mapping)]


def _partition(raw: Mapping[str, Any], gpu_types: Iterable[str]) -> PartitionFacts:
    """One partition of ``GET /partitions`` as PartitionFacts."""
    return PartitionFacts(
        name=str(raw.get("name", "")),
        state=str(raw.get("state") or "UNKNOWN"),
        nodes=_number(raw.get("total_nodes")) or 0,
        cpus=_number(raw.get("total_cpus")) or 0,
        memory_mb=_tres_memory_mb(str(raw.get("tres") or "")),
        gpu_types=tuple(sorted(set(gpu_types))),
        max_time_limit=_minutes_to_time(_number(raw.get("max_time_limit"))),
        default_time_limit=_minutes_to_time(_number(raw.get("default_time_limit"))),
        is_default="default" in (raw.get("flags") or []),
    )


def _gpu_types_by_partition(nodes: Sequence[Mapping[str, Any]]) -> dict[str, set[str]]:
    """{partition: GPU types} from the ``gres`` of each node (``gpu:a100:4(S:0-1),...``)."""
    found: dict[str, set[str]] = {}
    for node in nodes:
        types = gres_gpu_types(str(node.get("gres") or ""))
        for partition in node.get("partitions") or []:
            found.setdefault(str(partition), set()).update(types)
    return found


def gres_gpu_types(gres: str) -> set[str]:
    """GPU types in a node's GRES string: ``gpu:a100:4(S:0),gpu:v100:2`` -> {a100, v100}."""
    types = set()
    for item in gres.split(","):
        parts = item.split("(", 1)[0].split(":")
        if parts[0] == "gpu" and len(parts) == 3 and parts[1]:
            types.add(parts[1])
    return types


def _tres_memory_mb(tres: str) -> int | None:
    """The ``mem=`` of a TRES string in MB (``cpu=2,mem=23593M`` -> 23593)."""
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key == "mem" and value and patterns.matches(patterns.MEMORY, value):
            return patterns.memory_mb(value)
    return None


def _minutes_to_time(minutes: int | None) -> str | None:
    """Minutes as a Slurm time string (``60`` -> ``1:00:00``, ``1440`` -> ``1-00:00:00``)."""
    if minutes is None:
        return None
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours}:{mins:02d}:00"


def parse_node_address(body: Any, node: str) -> str:
    """The ``address`` (Slurm's NodeAddr) of ``node`` in a ``GET /node/{name}`` response."""
    for raw in _list(body, "nodes"):
        if raw.get("name") == node:
            return str(raw.get("address") or raw.get("hostname") or node)
    raise ValueError(f"node {node!r} not in the response")


# ----------------------------------------------------------------------------- the backend


class SlurmRestBackend:
    """SlurmBackend over slurmrestd, minting a short-lived JWT for every request.

    ``monitor_user`` is the Slurm user the cluster-wide reads (jobs, partitions, nodes) are
    made as; it must see every job (no ``PrivateData=jobs``, or be an operator). Pass
    ``trace_configs`` to instrument the HTTP client (metrics, request counts).
    """

    single_job_query = True

    def __init__(
        self,
        url: str,
        api_version: str,
        key: bytes,
        monitor_user: str,
        timeout: float = 30.0,
        *,
        max_connections: int = 4,
        token_lifespan: int = 60,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        if not patterns.matches(patterns.REST_API_VERSION, api_version):
            raise ValueError(f"not an openapi version: {api_version!r}")
        if not patterns.matches(patterns.USER, monitor_user):
            raise ValueError(f"not a user name: {monitor_user!r}")
        self._base = f"{url.rstrip('/')}/slurm/{api_version}"
        self._key = key
        self._monitor_user = monitor_user
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._token_lifespan = token_lifespan
        self._trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"SlurmRestBackend({self._base!r}, monitor_user={self._monitor_user!r})"

    # ----- SlurmBackend ------------------------------------------------------------------

    async def ping(self) -> ClusterFacts:
        """Check the cluster answers; return its version and partitions."""
        ping = await self._call("GET", "/ping", self._monitor_user, what="ping")
        parse_ping(ping)
        partitions = await self._call("GET", "/partitions", self._monitor_user,
                                      what="list partitions")
        nodes = await self._call("GET", "/nodes", self._monitor_user, what="list nodes")
        return parsed(_UNREADABLE, parse_cluster_facts, ping, partitions, nodes)

    async def submit(self, request: JobRequest) -> str:
        """Submit a batch job as ``request.user``; return the job id."""
        body = await self._call("POST", "/job/submit", request.user, submission(request),
                                what=f"submit {request.name} as {request.user}")
        job_id = parsed(_UNREADABLE, parse_submit, body)
        for warning in response_errors(body):
            log.warning("Slurm accepted job %s with a warning: %s", job_id, warning.message)
        return job_id

    async def jobs(self, tag_prefix: str) -> dict[str, JobInfo]:
        """All jobs whose comment starts with ``tag_prefix``, by job id, in ONE query."""
        try:
            body = await self._call("GET", "/jobs", self._monitor_user, what="list jobs")
        except SlurmRejected as exc:  # e.g. PrivateData hides jobs from the monitor user
            raise SlurmUnavailable(f"{exc} (job states unknown)") from exc
        return parsed(_UNREADABLE, parse_jobs, body, tag_prefix)

    async def job(self, job_id: str, tag_prefix: str) -> JobInfo | None:
        """``GET /job/{id}``: one job (None once Slurm has forgotten it)."""
        if not job_id.isdigit():
            raise SlurmRejected(f"not a Slurm job id: {job_id!r}")
        try:
            body = await self._call("GET", f"/job/{job_id}", self._monitor_user,
                                    what=f"look up job {job_id}")
        except SlurmRejected:  # "Invalid job id": purged from slurmctld's memory
            return None
        return parsed(_UNREADABLE, parse_jobs, body, tag_prefix).get(job_id)

    async def cancel(self, job_id: str, user: str) -> None:
        """Cancel a job as its user; a job that is already gone is not an error."""
        if not job_id.isdigit():
            raise SlurmRejected(f"not a Slurm job id: {job_id!r}")
        status, body = await self._send("DELETE", f"/job/{job_id}", user)
        error = classify_cancel(status, body, f"cancel job {job_id} as {user}")
        if error is not None:
            raise error

    async def node_address(self, node: str) -> str:
        """The address the node is reached at (Slurm's NodeAddr), for the readiness check."""
        if not patterns.matches(_NODE_NAME, node):
            raise SlurmRejected(f"not a node name: {node!r}")
        body = await self._call("GET", f"/node/{node}", self._monitor_user,
                                what=f"look up node {node}")
        return parsed(_UNREADABLE, parse_node_address, body, node)

    async def close(self) -> None:
        """Release connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ----- HTTP --------------------------------------------------------------------------

    async def _call(self, method: str, path: str, user: str, payload: Any = None, *,
                    what: str) -> Any:
        """Send a request and return its JSON body, raising the error it stands for."""
        status, body = await self._send(method, path, user, payload)
        error = classify(status, body, what)
        if error is not None:
            raise error
        return body

    async def _send(self, method: str, path: str, user: str, payload: Any = None
                    ) -> tuple[int, Any]:
        """(HTTP status, JSON body or text) of one request made as ``user``."""
        if not patterns.matches(patterns.USER, user):
            raise SlurmRejected(f"not a user name: {user!r}")
        headers = {
            "X-SLURM-USER-NAME": user,
            "X-SLURM-USER-TOKEN": mint_token(self._key, user, self._token_lifespan),
            # See _new_session: ask for keep-alive although the connection is closed after
            # the response; slurmrestd 22.05 garbles its answer to "Connection: close".
            "Connection": "keep-alive",
        }
        try:
            async with self._client().request(
                method, self._base + path, headers=headers, json=payload
            ) as response:
                text = await response.text()
                return response.status, _json_or_text(text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SlurmUnavailable(
                f"slurmrestd did not answer {method} {path}: {type(exc).__name__}: {exc}"
            ) from exc

    def _client(self) -> aiohttp.ClientSession:
        """The HTTP session, made on first use (inside the event loop that uses it)."""
        if self._session is None or self._session.closed:
            self._session = self._new_session()
        return self._session

    def _new_session(self) -> aiohttp.ClientSession:
        """A session whose every connection serves exactly one request.

        slurmrestd 22.05 is reported to stop answering after ~125 requests on one
        keep-alive socket, and idle keep-alive sockets it has dropped would fail the next
        request. Plain ``force_close`` is no way out: slurmrestd 22.05.8 mishandles
        ``Connection: close`` (and HTTP/1.0), writing that header *after* the body, which
        aiohttp rightly rejects as a bad response (recorded in tests). So the client
        closes each connection itself once the response is read (``force_close``) while
        the request says ``keep-alive`` (set in ``_send``). A fresh TCP connection per
        request costs little at the operator's rate (one ``jobs`` call per poll), and a
        small ``limit`` keeps a burst of submissions from swamping slurmrestd's threads.
        """
        connector = aiohttp.TCPConnector(force_close=True, limit=self._max_connections)
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            trace_configs=self._trace_configs or None,
            raise_for_status=False,
        )


def _json_or_text(text: str) -> Any:
    """The parsed JSON body, or the raw text when it is not JSON (e.g. a 401)."""
    try:
        return json.loads(text)
    except ValueError:
        return text
