"""A minimal synchronous Kubernetes REST client for the stack, tests and benchmarks.

It speaks plain JSON over HTTPS with a bearer token so tests can see exactly what the API
server answers (status codes and messages), impersonate users and use server-side dry runs.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


class KubeError(Exception):
    """A non-2xx answer from the API server; ``status`` and the server's ``message``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.message = str(body.get("message", body))
        super().__init__(f"HTTP {status}: {self.message}")


class KubeClient:
    """Send JSON requests to one API server as one identity."""

    def __init__(self, url: str, token: str, ca_path: Path,
                 impersonate: str | None = None,
                 impersonate_groups: tuple[str, ...] = ()) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._ssl = ssl.create_default_context(cafile=str(ca_path))
        self.impersonate = impersonate
        self.impersonate_groups = impersonate_groups
        self.ca_path = ca_path

    def as_user(self, user: str, groups: tuple[str, ...] = ()) -> KubeClient:
        """The same client impersonating ``user`` (the token's identity must be allowed)."""
        return KubeClient(self.url, self.token, self.ca_path, user, groups)

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json",
                params: Mapping[str, str] | None = None,
                accept: str = "application/json") -> dict[str, Any]:
        """One request; returns the decoded JSON answer or raises KubeError."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        data = None if body is None else json.dumps(body).encode()
        headers: list[tuple[str, str]] = [("Authorization", f"Bearer {self.token}"),
                                          ("Accept", accept)]
        if data is not None:
            headers.append(("Content-Type", content_type))
        if self.impersonate:
            headers.append(("Impersonate-User", self.impersonate))
        # Repeated headers (one per group) need http.client: urllib keeps one per name.
        headers += [("Impersonate-Group", g) for g in self.impersonate_groups]
        parsed = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPSConnection(parsed.hostname or "127.0.0.1", parsed.port,
                                           context=self._ssl, timeout=30)
        try:
            conn.putrequest(method, path + query)
            for name, value in headers:
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(data or b"")))
            conn.endheaders(data)
            resp = conn.getresponse()
            raw = resp.read()
            code = resp.status
        finally:
            conn.close()
        if code >= 300:
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"message": raw.decode(errors="replace")}
            raise KubeError(code, payload)
        return json.loads(raw) if raw else {}

    def get(self, path: str, **params: str) -> dict[str, Any]:
        return self.request("GET", path, params=params or None)

    def create(self, path: str, body: Any, dry_run: bool = False) -> dict[str, Any]:
        return self.request("POST", path, body, params={"dryRun": "All"} if dry_run else None)

    def replace(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any, kind: str = "merge") -> dict[str, Any]:
        ctype = {"merge": "application/merge-patch+json",
                 "json": "application/json-patch+json",
                 "strategic": "application/strategic-merge-patch+json"}[kind]
        return self.request("PATCH", path, body, content_type=ctype)

    def delete(self, path: str) -> dict[str, Any]:
        return self.request("DELETE", path)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def apply_crd(self, crd: dict[str, Any], timeout: float = 30.0) -> None:
        """Create or replace a CRD, then wait until it is Established."""
        name = crd["metadata"]["name"]
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        try:
            self.create(base, crd)
        except KubeError as exc:
            if exc.status != 409:
                raise
            current = self.get(f"{base}/{name}")
            crd = {**crd, "metadata": {**crd["metadata"],
                                       "resourceVersion": current["metadata"]["resourceVersion"]}}
            self.replace(f"{base}/{name}", crd)
        self.wait_for(lambda: _established(self.get(f"{base}/{name}")), timeout,
                      f"CRD {name} established")

    @staticmethod
    def wait_for(probe: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll probe until true, or raise TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while not probe():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)


def _established(crd: dict[str, Any]) -> bool:
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (crd.get("status") or {}).get("conditions") or [])
