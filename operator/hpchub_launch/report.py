"""HTTP with the standard library: probe the app locally, report to the operator.

Both go direct (no proxy from the environment: the bearer token must not travel through an
HTTP proxy, and 127.0.0.1 must not either) and never follow redirects.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import Message
from typing import IO

from .config import Callback

log = logging.getLogger("hpchub-launch")

REPORT_PATIENCE = 60.0
MAX_FAILURE = 1000


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turn every redirect into an HTTPError instead of following it."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> None:
        """Refuse to follow (a redirect could carry the Authorization header elsewhere)."""
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def app_answers(url: str, timeout: float = 2.0) -> bool:
    """True when the app answers ``url`` with any HTTP status below 500."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return int(resp.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError, http.client.HTTPException):
        # HTTPException: a forwarded port whose app is not listening yet (the forwarder
        # accepts, then hangs up).
        return False


def wait_until_up(url: str, timeout: float, keep_going: Callable[[], bool]) -> bool:
    """Poll ``url`` until the app answers (True), ``keep_going`` turns False or time is up."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while keep_going() and time.monotonic() < deadline:
        if app_answers(url):
            return True
        time.sleep(delay)
        # A local probe is cheap; every 0.2 s at most keeps readiness-to-report short (the
        # spawn-overhead benchmark showed up to 1 s lost here with a 1 s cap).
        delay = min(delay * 1.5, 0.2)
    return False


def send_report(
    callback: Callback,
    payload: dict[str, object],
    patience: float = REPORT_PATIENCE,
    keep_going: Callable[[], bool] = lambda: True,
) -> bool:
    """POST ``payload`` to the operator; retry transient errors for ``patience`` seconds.

    True when accepted (2xx); False on a refusal (any other status below 500), when the
    operator stayed unreachable, or when ``keep_going`` turned False between attempts.
    """
    deadline = time.monotonic() + patience
    delay = 0.5
    while True:
        outcome = _post_once(callback, payload)
        if outcome is not None:
            return outcome
        if not keep_going():
            return False
        if time.monotonic() + delay > deadline:
            log.error("gave up reporting after %.0f s", patience)
            return False
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def _post_once(callback: Callback, payload: dict[str, object]) -> bool | None:
    """One POST: True accepted, False refused, None for a transient failure."""
    request = urllib.request.Request(
        callback.report_url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {callback.token}", "Content-Type": "application/json"},
    )
    try:
        with _OPENER.open(request, timeout=10) as resp:
            log.info("report accepted (HTTP %d)", resp.status)
            return True
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            log.warning("operator answered HTTP %d, retrying", exc.code)
            return None
        log.error("operator refused the report: HTTP %d %s", exc.code, _error_of(exc))
        return False
    except (OSError, ValueError) as exc:
        log.warning("cannot reach the operator (%s), retrying", exc)
        return None


def _error_of(exc: urllib.error.HTTPError) -> str:
    """The short error the operator put in its JSON answer, if any."""
    try:
        body = json.loads(exc.read(4096) or b"{}")
    except (OSError, ValueError):
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def failure_text(reason: str, stderr_lines: list[str]) -> str:
    """One printable line of at most MAX_FAILURE characters: reason, then the stderr tail.

    The end of stderr is what explains a crash, so the tail is cut from its start.
    """
    text = _printable(reason)
    if stderr_lines:
        tail = _printable(" | ".join(line.strip() for line in stderr_lines))
        room = MAX_FAILURE - len(text) - len("; stderr: ...")
        if room > 20:
            text += "; stderr: " + ("..." + tail[-room:] if len(tail) > room else tail)
    return text[:MAX_FAILURE]


def _printable(text: str) -> str:
    """``text`` with every non-printable character (escapes, controls) made a '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)
