"""Record real slurmrestd (22.05, openapi v0.0.38) responses into ``slurmrestd/*.json``.

Run as root on a machine with the Slurm packages (see hpchub_stack.slurm)::

    .venv/bin/python tests/unit/data/record_slurmrestd.py

It starts a throw-away single-node Slurm, submits jobs that end in each state the parser
must know, provokes each error the backend classifies, and writes one file per response:
``{"request": "...", "http_status": N, "body": <JSON, or text when not JSON>}``. The unit
tests (tests/unit/test_rest_parse.py) read these files; they never talk to Slurm.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt

from hpchub_stack.base import make_root, remove_root
from hpchub_stack.slurm import OPENAPI_VERSION, REST_USER, SlurmCluster

OUT = Path(__file__).parent / "slurmrestd"
MONITOR = REST_USER


def record(name: str, request: str, status: int, body: Any) -> Any:
    """Write one sample file and return the body."""
    OUT.mkdir(exist_ok=True)
    sample = {"request": request, "http_status": status, "body": body}
    (OUT / f"{name}.json").write_text(json.dumps(sample, indent=1, sort_keys=True) + "\n")
    print(f"{name}: HTTP {status}", file=sys.stderr)
    return body


def call(slurm: SlurmCluster, name: str, method: str, path: str, user: str,
         payload: Any = None, token: str | None = None) -> Any:
    """Make a request through the stack's client and record it."""
    status, body = slurm.rest_request(method, path, user, payload, token=token)
    return record(name, f"{method} {path} as {user}", status, body)


def job(slurm: SlurmCluster, comment: str, script: str, **extra: Any) -> dict[str, Any]:
    """A submission body as the operator sends it."""
    spec = {"name": f"rec-{comment or 'untagged'}", "comment": comment,
            "current_working_directory": str(slurm.job_dir), "standard_output": "/dev/null",
            "environment": {"PATH": "/usr/bin:/bin"}, "requeue": False, **extra}
    return {"job": spec, "script": f"#!/bin/bash\n{script}\n"}


def submit(slurm: SlurmCluster, user: str, body: dict[str, Any], name: str | None = None
           ) -> int:
    """Submit (recording the response when ``name`` is given); return the job id."""
    status, answer = slurm.rest_request("POST", "job/submit", user, body)
    if name:
        record(name, f"POST job/submit as {user}", status, answer)
    assert status == 200, answer
    return int(answer["job_id"])


def wait_finished(slurm: SlurmCluster, job_ids: list[int], timeout: float = 180) -> None:
    """Poll until every job has a finished state."""
    done = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = slurm.rest_request("GET", "jobs", MONITOR)
        states = {j["job_id"]: j["job_state"] for j in body.get("jobs", [])}
        if all(states.get(i) in done for i in job_ids):
            return
        time.sleep(2)
    raise TimeoutError(f"jobs {job_ids} did not finish")


def no_token(slurm: SlurmCluster) -> None:
    """A request without a token (slurmrestd answers in plain text)."""
    url = f"{slurm.rest_url}/slurm/{OPENAPI_VERSION}/jobs"
    req = urllib.request.Request(url, headers={"X-SLURM-USER-NAME": "alice"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            record("jobs_no_token", "GET jobs without a token", resp.status, resp.read().decode())
    except urllib.error.HTTPError as exc:
        record("jobs_no_token", "GET jobs without a token", exc.code, exc.read().decode())


def connection_close(slurm: SlurmCluster) -> None:
    """The raw answer to ``Connection: close`` (slurmrestd 22.05 puts a header after the
    body), kept as evidence for the connector settings in backends/rest.py."""
    host, port = slurm.rest_url.removeprefix("http://").split(":")
    token = slurm.mint_token(MONITOR, 60)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET /slurm/{OPENAPI_VERSION}/ping HTTP/1.1\r\nHost: {host}\r\n"
            f"Connection: close\r\nX-SLURM-USER-NAME: {MONITOR}\r\n"
            f"X-SLURM-USER-TOKEN: {token}\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    (OUT / "ping_connection_close.http").write_bytes(data)


def record_jobs(slurm: SlurmCluster) -> None:
    """Jobs in every state, then one ``GET /jobs``.

    The jobs that end come first (the running ones would take every CPU of the node).
    """
    short = {"time_limit": 2}
    finished = [
        submit(slurm, "alice", job(slurm, "hpchub:uid-completed", "true", **short)),
        submit(slurm, "alice", job(slurm, "hpchub:uid-failed", "exit 3", **short)),
        submit(slurm, "alice", job(slurm, "hpchub:uid-signal", "kill -9 $$", **short)),
        submit(slurm, "bob", job(slurm, "hpchub:uid-timeout", "sleep 600", time_limit=1)),
        submit(slurm, "alice", job(slurm, "", "true", **short)),
    ]
    wait_finished(slurm, finished)
    running = submit(slurm, "alice", job(slurm, "hpchub:uid-running", "sleep 600"),
                     "submit_ok")
    submit(slurm, "alice", job(slurm, "hpchub:uid-gpu", "sleep 600", partition="gpu",
                               gres="gpu:fake:1", time_limit=30))
    submit(slurm, "bob", job(slurm, "hpchub:uid-held", "true", hold=True))
    submit(slurm, "carol", job(slurm, "hpchub:uid-resources", "true",
                               cpus_per_task=slurm.cpus))
    submit(slurm, "alice", job(slurm, "hpchub:uid-too-long", "true", time_limit=100000),
           "submit_time_limit_warning")
    cancelled = submit(slurm, "carol", job(slurm, "hpchub:uid-cancelled", "sleep 600"))
    time.sleep(3)
    call(slurm, "cancel_ok", "DELETE", f"job/{cancelled}", "carol")
    call(slurm, "cancel_denied", "DELETE", f"job/{running}", "bob")
    wait_finished(slurm, [cancelled])
    call(slurm, "cancel_finished", "DELETE", f"job/{finished[0]}", "alice")
    call(slurm, "jobs", "GET", "jobs", MONITOR)


def record_errors(slurm: SlurmCluster) -> None:
    """Refusals, and what the controller being down looks like."""
    call(slurm, "submit_bad_partition", "POST", "job/submit", "alice",
         job(slurm, "hpchub:x", "true", partition="nope"))
    call(slurm, "submit_bad_gres", "POST", "job/submit", "alice",
         job(slurm, "hpchub:x", "true", gres="gpu:nope:1"))
    no_env = job(slurm, "hpchub:x", "true")
    del no_env["job"]["environment"]
    call(slurm, "submit_no_environment", "POST", "job/submit", "alice", no_env)
    call(slurm, "cancel_invalid_id", "DELETE", "job/999999", "alice")
    call(slurm, "node_invalid", "GET", "node/nope", MONITOR)
    forged = jwt.encode({"sun": MONITOR, "iat": 0, "exp": 2**31 - 1}, b"k" * 32, "HS256")
    call(slurm, "jobs_bad_token", "GET", "jobs", MONITOR, token=forged)
    no_token(slurm)
    connection_close(slurm)
    slurm.stop_controller()
    try:
        call(slurm, "jobs_controller_down", "GET", "jobs", MONITOR)
        call(slurm, "ping_controller_down", "GET", "ping", MONITOR)
        call(slurm, "partitions_controller_down", "GET", "partitions", MONITOR)
        call(slurm, "submit_controller_down", "POST", "job/submit", "alice",
             job(slurm, "hpchub:x", "true"))
        call(slurm, "cancel_controller_down", "DELETE", "job/1", "alice")
    finally:
        slurm.start_controller()


def main() -> None:
    """Start Slurm, record everything, stop Slurm."""
    root = make_root("hpchub-record-")
    slurm = SlurmCluster(root)
    try:
        slurm.start()
        call(slurm, "ping", "GET", "ping", MONITOR)
        call(slurm, "partitions", "GET", "partitions", MONITOR)
        call(slurm, "nodes", "GET", "nodes", MONITOR)
        call(slurm, "node", "GET", f"node/{slurm.nodename}", MONITOR)
        record_jobs(slurm)
        record_errors(slurm)
    finally:
        slurm.stop()
        remove_root(root)


if __name__ == "__main__":
    main()
