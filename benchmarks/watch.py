"""A watch on JupyterServers that records when each one first shows each phase."""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import threading
import time
import urllib.parse
from typing import Any

from .stack import SERVERS, Stack


class ServerWatch(threading.Thread):
    """Watches JupyterServers; records (wall time) when each uid first shows each phase."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.first_seen: dict[str, dict[str, float]] = {}
        self.names: dict[str, str] = {}
        self.job_ids: dict[str, str] = {}
        self._stop = threading.Event()
        self._conn: http.client.HTTPSConnection | None = None

    def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self._watch_once()
            self._stop.wait(0.2)

    def _watch_once(self) -> None:
        admin = self.stack.admin
        rv = admin.get(SERVERS)["metadata"]["resourceVersion"]
        for obj in admin.get(SERVERS)["items"]:
            self._record(obj)
        url = urllib.parse.urlsplit(admin.url)
        ctx = ssl.create_default_context(cafile=str(self.stack.kube.ca_path))
        conn = http.client.HTTPSConnection(url.hostname or "127.0.0.1", url.port, context=ctx,
                                           timeout=3600)
        self._conn = conn
        query = urllib.parse.urlencode({"watch": "1", "resourceVersion": rv,
                                        "timeoutSeconds": "3600"})
        conn.request("GET", f"{SERVERS}?{query}",
                     headers={"Authorization": f"Bearer {admin.token}"})
        resp = conn.getresponse()
        while not self._stop.is_set():
            line = resp.readline()
            if not line:
                return
            event = json.loads(line)
            if event.get("type") in ("ADDED", "MODIFIED"):
                self._record(event["object"])

    def _record(self, obj: dict[str, Any]) -> None:
        now = time.time()
        uid = obj["metadata"]["uid"]
        self.names[uid] = obj["metadata"]["name"]
        status = obj.get("status") or {}
        if status.get("jobId"):
            self.job_ids[uid] = str(status["jobId"])
        phase = status.get("phase") or "None"
        self.first_seen.setdefault(uid, {}).setdefault(phase, now)

    def stop(self) -> None:
        self._stop.set()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.sock.close()  # type: ignore[union-attr]
