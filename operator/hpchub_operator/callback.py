"""The callback server: where ``hpchub-launch`` reports a server's port (or why it failed).

One route, ``POST /v1/servers/{uid}/report``, authenticated by a per-server bearer token
(hex HMAC-SHA256 of the uid under the operator's secret, so nothing is stored per server).
The body is a JSON object with exactly one of ``{"port": int}``, ``{"failure": str}`` or
``{"started": true}`` (the job began: a hint to look at Slurm now rather than at the next
poll; it changes nothing by itself); anything else is refused with a 4xx JSON error and
counted by reason. The host is never taken from the request: the operator reads the node
from Slurm.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, Counter

log = logging.getLogger(__name__)

MAX_BODY = 4096
MAX_FAILURE = 1000
REPORT_ROUTE = "/v1/servers/{uid}/report"
_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_TOKEN = re.compile(r"^[0-9a-f]{64}$")


class AllowedPorts(Protocol):
    """The ports a server may report (inclusive); ``hpchub_api.models.PortRange`` is one."""

    @property
    def min(self) -> int:
        """Lowest allowed port."""

    @property
    def max(self) -> int:
        """Highest allowed port."""


@dataclass(frozen=True)
class PortBounds:
    """A plain :class:`AllowedPorts` (unprivileged ports by default)."""

    min: int = 1024
    max: int = 65535


#: What the operator knows of a server: None for an unknown uid, else its allowed ports.
ServerLookup = Callable[[str], AllowedPorts | Awaitable[AllowedPorts | None] | None]


@dataclass(frozen=True)
class Report:
    """One accepted report: a port, a failure, or (neither) the job-started hint."""

    port: int | None
    failure: str | None
    received_at: dt.datetime

    @property
    def kind(self) -> str:
        """``port``, ``failure`` or ``started`` (metric label, log text)."""
        if self.port is not None:
            return "port"
        return "started" if self.failure is None else "failure"


OnReport = Callable[[str, Report], Awaitable[None]]


class Rejected(Exception):
    """A refused request: HTTP status, a stable reason (metric label) and a message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        """Keep the three parts; the message is for the caller, never secret."""
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def server_token(secret: bytes, uid: str) -> str:
    """The bearer token of one server: hex HMAC-SHA256(secret, uid)."""
    return hmac.new(secret, uid.encode(), hashlib.sha256).hexdigest()


class CallbackServer:
    """The state behind the routes: secret, lookup, report sink and metrics."""

    def __init__(
        self,
        secret: bytes,
        lookup: ServerLookup,
        on_report: OnReport,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Keep the collaborators and register the counters in ``registry``."""
        if len(secret) < 16:
            raise ValueError("the callback secret must be at least 16 bytes")
        self._secret = secret
        self._lookup = lookup
        self._on_report = on_report
        registry = REGISTRY if registry is None else registry
        self.rejections = Counter(
            "hpchub_callback_rejections", "Refused callback requests", ["reason"], registry=registry
        )
        self.reports = Counter(
            "hpchub_callback_reports", "Accepted callback reports", ["kind"], registry=registry
        )

    async def report(self, request: web.Request) -> web.Response:
        """POST /v1/servers/{uid}/report: check everything, then hand the report on."""
        uid = request.match_info["uid"]
        if not _UID.match(uid):
            raise Rejected(404, "bad_uid", "not a server uid")
        self._authenticate(request, uid)
        ports = await self._allowed_ports(uid)
        report = parse_report(await _read_body(request), ports)
        # Logged on arrival: what follows (a Slurm query, a status write) takes its time.
        text = {"port": f"port {report.port}", "failure": "a failure", "started": "its start"}
        log.info("server %s reported %s", uid, text[report.kind])
        try:
            await self._on_report(uid, report)
        except Exception:
            log.exception("could not record the report of server %s", uid)
            return _unavailable()
        self.reports.labels(kind=report.kind).inc()
        return web.json_response({"status": "accepted"})

    def _authenticate(self, request: web.Request, uid: str) -> None:
        """Require ``Authorization: Bearer <token of this uid>``."""
        header = request.headers.get("Authorization")
        if header is None:
            raise Rejected(401, "missing_auth", "Authorization header required")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise Rejected(401, "bad_auth_scheme", "use the Bearer scheme")
        token = token.strip()
        if not _TOKEN.match(token):
            raise Rejected(401, "malformed_token", "malformed bearer token")
        if not hmac.compare_digest(token.encode(), server_token(self._secret, uid).encode()):
            raise Rejected(403, "bad_token", "token not valid for this server")

    async def _allowed_ports(self, uid: str) -> AllowedPorts:
        """The port range of a known server; refuse unknown uids."""
        try:
            found = self._lookup(uid)
            ports = await found if inspect.isawaitable(found) else found
        except Exception:
            log.exception("could not look up server %s", uid)
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "unavailable", "message": "try again"}),
                content_type="application/json",
            ) from None
        if ports is None:
            raise Rejected(404, "unknown_server", "no such server")
        return ports

    @web.middleware
    async def errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Turn refusals (ours and the router's) into JSON errors and count them."""
        try:
            return await handler(request)
        except Rejected as exc:
            return self._refuse(request, exc)
        except web.HTTPMethodNotAllowed:
            return self._refuse(request, Rejected(405, "method_not_allowed", "use POST"))
        except web.HTTPNotFound:
            return self._refuse(request, Rejected(404, "not_found", "no such route"))

    def _refuse(self, request: web.Request, exc: Rejected) -> web.Response:
        """Count and log one refusal; answer with its JSON error."""
        self.rejections.labels(reason=exc.reason).inc()
        log.warning(
            "refused %s %s from %s: %s", request.method, request.path, request.remote, exc.reason
        )
        return web.json_response({"error": exc.reason, "message": exc.message}, status=exc.status)


def _unavailable() -> web.Response:
    """503 with a JSON error: the launcher retries these."""
    return web.json_response({"error": "unavailable", "message": "try again"}, status=503)


async def _read_body(request: web.Request) -> bytes:
    """The request body, refused when larger than MAX_BODY (declared or streamed)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Rejected(413, "too_large", f"body larger than {MAX_BODY} bytes")
    body = bytearray()
    # read(n) returns what has arrived so far (at most n bytes): loop until EOF.
    while chunk := await request.content.read(MAX_BODY + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY:
            raise Rejected(413, "too_large", f"body larger than {MAX_BODY} bytes")
    return bytes(body)


def parse_report(body: bytes, ports: AllowedPorts) -> Report:
    """Validate a report body: a JSON object with exactly one of port, failure, started."""
    data = _json_object(body)
    if set(data) - set(_KINDS):
        raise Rejected(400, "unexpected_field", "only port, failure or started may be sent")
    if len(data) > 1:
        raise Rejected(400, "several_kinds", "send one of port, failure or started")
    now = dt.datetime.now(dt.UTC)
    if "port" in data:
        return Report(port=_port(data["port"], ports), failure=None, received_at=now)
    if "failure" in data:
        return Report(port=None, failure=_failure(data["failure"]), received_at=now)
    if "started" in data:
        if data["started"] is not True:
            raise Rejected(400, "started_type", "started must be true")
        return Report(port=None, failure=None, received_at=now)
    raise Rejected(400, "empty_report", "send port, failure or started")


_KINDS = ("port", "failure", "started")


def _json_object(body: bytes) -> dict[str, Any]:
    """Decode a JSON object, refusing duplicate keys, NaN and everything not an object."""
    try:
        data = json.loads(
            body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except _DuplicateKey:
        raise Rejected(400, "duplicate_field", "a field appears twice") from None
    except (UnicodeDecodeError, ValueError):
        raise Rejected(400, "not_json", "body is not JSON") from None
    if not isinstance(data, dict):
        raise Rejected(400, "not_object", "body must be a JSON object")
    return data


class _DuplicateKey(Exception):
    """A JSON object names one key twice (which value would win is parser-dependent)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook that refuses duplicate keys."""
    data = dict(pairs)
    if len(data) != len(pairs):
        raise _DuplicateKey
    return data


def _no_constant(name: str) -> Any:
    """parse_constant that refuses NaN and Infinity (not JSON)."""
    raise ValueError(name)


def _port(value: object, ports: AllowedPorts) -> int:
    """A port number (a real int, not a bool) inside the server's allowed range."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise Rejected(400, "port_type", "port must be an integer")
    if not ports.min <= value <= ports.max:
        raise Rejected(400, "port_range", f"port must be within {ports.min}-{ports.max}")
    return value


def _failure(value: object) -> str:
    """A non-empty, printable failure message of at most MAX_FAILURE characters."""
    if not isinstance(value, str):
        raise Rejected(400, "failure_type", "failure must be a string")
    if len(value) > MAX_FAILURE:
        raise Rejected(400, "failure_too_long", f"failure longer than {MAX_FAILURE} characters")
    if not value or not value.isprintable():
        raise Rejected(400, "failure_not_printable", "failure must be printable text")
    return value


async def _healthz(request: web.Request) -> web.Response:
    """GET /healthz: the server is up."""
    return web.json_response({"status": "ok"})


def make_app(
    secret: bytes,
    lookup: ServerLookup,
    on_report: OnReport,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The aiohttp application of the callback server."""
    server = CallbackServer(secret, lookup, on_report, registry)
    app = web.Application(middlewares=[server.errors], client_max_size=MAX_BODY)
    app[CALLBACK_SERVER] = server
    app.router.add_post(REPORT_ROUTE, server.report)
    app.router.add_get("/healthz", _healthz)
    return app


CALLBACK_SERVER: web.AppKey[CallbackServer] = web.AppKey("callback_server", CallbackServer)


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on host:port; the caller stops it with ``await runner.cleanup()``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
