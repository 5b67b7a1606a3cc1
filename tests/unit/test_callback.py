"""The callback server refuses every malformed or unauthorised report, and counts why."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from hpchub_operator.callback import (
    MAX_BODY,
    AllowedPorts,
    PortBounds,
    Report,
    make_app,
    server_token,
)

SECRET = b"0123456789abcdef-test-secret"
UID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
OTHER_UID = "6fa459ea-ee8a-3ca4-894e-db77e160355e"
GONE_UID = "9c5b94b1-35ad-49bb-b118-8e8fc24abf80"
NARROW_UID = "0e8e8b1c-0000-4000-8000-000000000001"
SERVERS: dict[str, AllowedPorts] = {
    UID: PortBounds(),
    OTHER_UID: PortBounds(),
    NARROW_UID: PortBounds(20000, 60000),
}
REJECTIONS = "hpchub_callback_rejections_total"


@dataclass
class Harness:
    """A running callback app, what it received and its metrics."""

    client: TestClient[web.Request, web.Application]
    registry: CollectorRegistry
    received: list[tuple[str, Report]] = field(default_factory=list)

    async def post(
        self,
        uid: str = UID,
        body: bytes | str | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST a report; by default with the right token for ``uid``."""
        if headers is None:
            headers = {"Authorization": f"Bearer {token or server_token(SECRET, uid)}"}
        data = json.dumps(json_body) if json_body is not None else body
        resp = await self.client.post(f"/v1/servers/{uid}/report", data=data, headers=headers)
        return resp.status, await resp.json()

    def rejected(self, reason: str) -> float:
        """How many refusals were counted with ``reason``."""
        return self.registry.get_sample_value(REJECTIONS, {"reason": reason}) or 0.0

    def total_rejected(self) -> float:
        """All refusals counted, whatever the reason."""
        return sum(
            s.value for m in self.registry.collect() for s in m.samples if s.name == REJECTIONS
        )


def sync_lookup(uid: str) -> AllowedPorts | None:
    """The operator's view of its servers, answered synchronously."""
    return SERVERS.get(uid)


async def async_lookup(uid: str) -> AllowedPorts | None:
    """The same view, answered by a coroutine."""
    return SERVERS.get(uid)


Lookup = Callable[[str], AllowedPorts | Awaitable[AllowedPorts | None] | None]


async def start_harness(lookup: Lookup) -> Harness:
    """Serve a fresh app (own metrics registry) on a free loopback port."""
    registry = CollectorRegistry()
    harness: Harness

    async def on_report(uid: str, report: Report) -> None:
        harness.received.append((uid, report))

    app = make_app(SECRET, lookup, on_report, registry=registry)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    harness = Harness(client=client, registry=registry)
    return harness


@pytest.fixture(params=[sync_lookup, async_lookup], ids=["sync-lookup", "async-lookup"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    h = await start_harness(request.param)
    yield h
    await h.client.close()


# ------------------------------------------------------------------------------ accepted


async def test_port_report_is_accepted(harness: Harness) -> None:
    status, body = await harness.post(json_body={"port": 8888})
    assert (status, body) == (200, {"status": "accepted"})
    [(uid, report)] = harness.received
    assert (uid, report.port, report.failure) == (UID, 8888, None)
    assert report.received_at.tzinfo is not None
    assert harness.total_rejected() == 0
    assert harness.registry.get_sample_value("hpchub_callback_reports_total", {"kind": "port"}) == 1


async def test_failure_report_is_accepted(harness: Harness) -> None:
    text = "jupyter-lab exited with status 1 before answering; stderr: ... | No module named x"
    status, _ = await harness.post(json_body={"failure": text})
    assert status == 200
    [(uid, report)] = harness.received
    assert (uid, report.port, report.failure) == (UID, None, text)


async def test_started_hint_is_accepted(harness: Harness) -> None:
    status, _ = await harness.post(json_body={"started": True})
    assert status == 200
    [(uid, report)] = harness.received
    assert (uid, report.port, report.failure, report.kind) == (UID, None, None, "started")
    labels = {"kind": "started"}
    assert harness.registry.get_sample_value("hpchub_callback_reports_total", labels) == 1


@pytest.mark.parametrize("port", [20000, 60000])
async def test_edges_of_the_server_port_range_are_accepted(harness: Harness, port: int) -> None:
    status, _ = await harness.post(NARROW_UID, json_body={"port": port})
    assert status == 200
    assert harness.received[0][1].port == port


async def test_failure_of_exactly_1000_characters_is_accepted(harness: Harness) -> None:
    status, _ = await harness.post(json_body={"failure": "x" * 1000})
    assert status == 200


async def test_healthz(harness: Harness) -> None:
    resp = await harness.client.get("/healthz")
    assert resp.status == 200


# ------------------------------------------------------------------------------ refused

GOOD = json.dumps({"port": 8888})
WRONG_TOKEN = "0" * 64


@dataclass(frozen=True)
class Abuse:
    """One refused request and the status and reason it must get."""

    uid: str = UID
    body: bytes | str = GOOD
    headers: dict[str, str] | None = None
    token: str | None = None
    status: int = 400
    reason: str = ""


ABUSES: dict[str, Abuse] = {
    "no-auth": Abuse(headers={}, status=401, reason="missing_auth"),
    "basic-scheme": Abuse(
        headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"}, status=401, reason="bad_auth_scheme"
    ),
    "bearer-without-token": Abuse(
        headers={"Authorization": "Bearer"}, status=401, reason="malformed_token"
    ),
    "malformed-token": Abuse(token="not-a-hex-token", status=401, reason="malformed_token"),
    "non-ascii-token": Abuse(
        headers={"Authorization": "Bearer " + "é" * 64}, status=401, reason="malformed_token"
    ),
    "wrong-token": Abuse(token=WRONG_TOKEN, status=403, reason="bad_token"),
    "token-of-another-server": Abuse(
        token=server_token(SECRET, OTHER_UID), status=403, reason="bad_token"
    ),
    "token-under-another-secret": Abuse(
        token=server_token(b"another-secret-16b", UID), status=403, reason="bad_token"
    ),
    "unknown-uid": Abuse(uid=GONE_UID, status=404, reason="unknown_server"),
    "uid-not-a-uid": Abuse(uid="alice_server", status=404, reason="bad_uid"),
    "extra-field": Abuse(body='{"port": 8888, "host": "evil.example"}', reason="unexpected_field"),
    "port-and-failure": Abuse(body='{"port": 8888, "failure": "x"}', reason="several_kinds"),
    "started-and-port": Abuse(body='{"started": true, "port": 8888}', reason="several_kinds"),
    "started-false": Abuse(body='{"started": false}', reason="started_type"),
    "started-as-string": Abuse(body='{"started": "yes"}', reason="started_type"),
    "started-as-one": Abuse(body='{"started": 1}', reason="started_type"),
    "empty-object": Abuse(body="{}", reason="empty_report"),
    "duplicate-key": Abuse(body='{"port": 8888, "port": 22}', reason="duplicate_field"),
    "port-as-string": Abuse(body='{"port": "8888"}', reason="port_type"),
    "port-as-bool": Abuse(body='{"port": true}', reason="port_type"),
    "port-as-float": Abuse(body='{"port": 8888.0}', reason="port_type"),
    "port-as-null": Abuse(body='{"port": null}', reason="port_type"),
    "port-22": Abuse(body='{"port": 22}', reason="port_range"),
    "port-70000": Abuse(body='{"port": 70000}', reason="port_range"),
    "port-0": Abuse(body='{"port": 0}', reason="port_range"),
    "port-negative": Abuse(body='{"port": -8888}', reason="port_range"),
    "port-outside-cluster-range": Abuse(uid=NARROW_UID, body='{"port": 8888}', reason="port_range"),
    "huge-body": Abuse(
        body=json.dumps({"failure": "x" * (MAX_BODY + 10)}), status=413, reason="too_large"
    ),
    "not-json": Abuse(body="port=8888", reason="not_json"),
    "not-utf8": Abuse(body=b'{"failure": "\xff\xfe"}', reason="not_json"),
    "nan": Abuse(body='{"port": NaN}', reason="not_json"),
    "json-array": Abuse(body="[8888]", reason="not_object"),
    "json-number": Abuse(body="8888", reason="not_object"),
    "failure-as-number": Abuse(body='{"failure": 1}', reason="failure_type"),
    "failure-too-long": Abuse(body=json.dumps({"failure": "x" * 1001}), reason="failure_too_long"),
    "failure-with-newline": Abuse(
        body=json.dumps({"failure": "a\nb"}), reason="failure_not_printable"
    ),
    "failure-with-escape": Abuse(
        body=json.dumps({"failure": "\x1b[2Jboom"}), reason="failure_not_printable"
    ),
    "failure-empty": Abuse(body='{"failure": ""}', reason="failure_not_printable"),
}


@pytest.mark.parametrize("abuse", ABUSES.values(), ids=ABUSES.keys())
async def test_abuse_is_refused_and_counted(harness: Harness, abuse: Abuse) -> None:
    status, body = await harness.post(
        abuse.uid, abuse.body, token=abuse.token, headers=abuse.headers
    )
    assert (status, body["error"]) == (abuse.status, abuse.reason)
    assert harness.received == []
    assert harness.rejected(abuse.reason) == 1
    assert harness.total_rejected() == 1


async def test_streamed_body_over_the_limit_is_refused(harness: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1024

    headers = {"Authorization": f"Bearer {server_token(SECRET, UID)}"}
    resp = await harness.client.post(f"/v1/servers/{UID}/report", data=chunks(), headers=headers)
    assert resp.status == 413
    assert harness.rejected("too_large") == 1


async def test_body_arriving_in_pieces_is_read_whole(harness: Harness) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for part in (b'{"po', b'rt": 88', b"88}"):
            yield part

    headers = {"Authorization": f"Bearer {server_token(SECRET, UID)}"}
    resp = await harness.client.post(f"/v1/servers/{UID}/report", data=pieces(), headers=headers)
    assert resp.status == 200
    assert harness.received[0][1].port == 8888


async def test_get_on_the_report_route_is_405(harness: Harness) -> None:
    resp = await harness.client.get(f"/v1/servers/{UID}/report")
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"
    assert harness.rejected("method_not_allowed") == 1


async def test_unknown_route_is_404(harness: Harness) -> None:
    resp = await harness.client.post("/v1/servers", data=GOOD)
    assert resp.status == 404
    assert harness.rejected("not_found") == 1


def test_reasons_are_distinct_per_kind_of_abuse() -> None:
    """Only tokens that fail the HMAC share a reason: a replay looks like any wrong token."""
    by_reason: dict[str, set[str]] = {}
    for name, abuse in ABUSES.items():
        by_reason.setdefault(abuse.reason, set()).add(name)
    assert len(by_reason) >= 18
    assert by_reason["bad_token"] == {
        "wrong-token",
        "token-of-another-server",
        "token-under-another-secret",
    }


# ------------------------------------------------------------------------------ failures inside


async def test_lookup_error_is_503_and_not_a_rejection() -> None:
    def broken(uid: str) -> AllowedPorts | None:
        raise RuntimeError("API server down")

    h = await start_harness(broken)
    try:
        resp = await h.client.post(
            f"/v1/servers/{UID}/report",
            data=GOOD,
            headers={"Authorization": f"Bearer {server_token(SECRET, UID)}"},
        )
        assert resp.status == 503
        assert (await resp.json())["error"] == "unavailable"
        assert h.total_rejected() == 0
    finally:
        await h.client.close()


async def test_on_report_error_is_503_so_the_launcher_retries() -> None:
    async def failing(uid: str, report: Report) -> None:
        raise RuntimeError("status patch failed")

    registry = CollectorRegistry()
    app = make_app(SECRET, sync_lookup, failing, registry=registry)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(
            f"/v1/servers/{UID}/report",
            data=GOOD,
            headers={"Authorization": f"Bearer {server_token(SECRET, UID)}"},
        )
        assert resp.status == 503


def test_server_token_is_hmac_sha256_hex() -> None:
    import hashlib
    import hmac

    assert server_token(SECRET, UID) == hmac.new(SECRET, UID.encode(), hashlib.sha256).hexdigest()
    assert server_token(SECRET, UID) != server_token(SECRET, OTHER_UID)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        make_app(b"short", sync_lookup, _noop, registry=CollectorRegistry())


async def _noop(uid: str, report: Report) -> None:
    """A report sink that drops everything."""
