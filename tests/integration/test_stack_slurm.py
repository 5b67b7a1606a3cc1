"""The real Slurm of the stack: jobs run as the demo users, through the CLI and slurmrestd."""

from __future__ import annotations

import pwd
import subprocess
import uuid
from pathlib import Path
from typing import Any

import jwt

from hpchub_stack.process import run, wait_until
from hpchub_stack.slurm import SlurmCluster

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def sbatch_as(slurm: SlurmCluster, user: str, *args: str) -> int:
    """Submit with ``sbatch --parsable`` as ``user`` (real uid and gid); return the job id."""
    res = run(
        ["runuser", "-u", user, "--", "sbatch", "--parsable", "-D", str(slurm.job_dir), *args],
        env=slurm.command_env(),
        timeout=30,
    )
    return int(res.stdout.decode().split(";")[0])


def job_fields(slurm: SlurmCluster, job_id: int) -> dict[str, str]:
    """``scontrol show job -o`` as a dict (JobState, UserId, Comment...)."""
    out = run(["scontrol", "show", "job", "-o", str(job_id)], env=slurm.command_env())
    fields: dict[str, str] = {}
    for token in out.stdout.decode().split():
        key, _, value = token.partition("=")
        fields.setdefault(key, value)
    return fields


def wait_state(slurm: SlurmCluster, job_id: int, states: set[str], timeout: float = 30) -> str:
    """Poll the job until its state is one of ``states``; return that state."""
    seen: list[str] = []

    def reached() -> bool:
        seen.append(job_fields(slurm, job_id)["JobState"])
        return seen[-1] in states

    wait_until(reached, timeout=timeout, what=f"job {job_id} in {states} (last: {seen[-1:]})")
    return seen[-1]


def wait_file(path: Path, timeout: float = 10) -> str:
    """Poll until ``path`` has content (slurmstepd may flush after the state changes)."""
    wait_until(lambda: path.exists() and path.stat().st_size > 0, timeout=timeout, what=str(path))
    return path.read_text()


def rest_job(slurm: SlurmCluster, out: Path, comment: str, script: str) -> dict[str, Any]:
    """A v0.0.38 job submission body writing stdout to ``out``."""
    return {
        "job": {
            "name": "stack-test",
            "comment": comment,
            "current_working_directory": str(slurm.job_dir),
            "standard_output": str(out),
            "environment": {"PATH": "/usr/bin:/bin"},
        },
        "script": f"#!/bin/bash\n{script}\n",
    }


def test_sbatch_job_runs_as_alice(slurm: SlurmCluster) -> None:
    out = slurm.job_dir / f"sbatch-{uuid.uuid4().hex}.out"
    job_id = sbatch_as(slurm, "alice", "-o", str(out), "--wrap", "id -un; id -gn")

    assert wait_state(slurm, job_id, TERMINAL) == "COMPLETED"
    assert wait_file(out).split() == ["alice", "hpcusers"]
    assert out.stat().st_uid == pwd.getpwnam("alice").pw_uid


def test_rest_submit_runs_as_alice(slurm: SlurmCluster) -> None:
    out = slurm.job_dir / f"rest-{uuid.uuid4().hex}.out"
    status, body = slurm.rest_request(
        "POST", "job/submit", "alice", rest_job(slurm, out, "rest-submit", "id -un")
    )
    assert status == 200, body
    job_id = int(body["job_id"])

    assert wait_state(slurm, job_id, TERMINAL) == "COMPLETED"
    assert wait_file(out).strip() == "alice"
    assert job_fields(slurm, job_id)["UserId"].startswith("alice(")


def test_rest_rejects_token_signed_with_another_key(slurm: SlurmCluster) -> None:
    forged = jwt.encode({"sun": "alice", "iat": 0, "exp": 2**31 - 1}, b"k" * 32, "HS256")
    status, body = slurm.rest_request("GET", "jobs", "alice", token=forged)

    assert status != 200
    assert body.get("errors"), body
    assert not body.get("jobs")


def test_rest_jobs_lists_comment_tag(slurm: SlurmCluster) -> None:
    tag = f"hpchub-uid-{uuid.uuid4().hex}"
    out = slurm.job_dir / f"{tag}.out"
    status, body = slurm.rest_request(
        "POST", "job/submit", "bob", rest_job(slurm, out, tag, "true")
    )
    assert status == 200, body
    job_id = int(body["job_id"])

    status, listing = slurm.rest_request("GET", "jobs", "alice")
    assert status == 200, listing
    mine = [j for j in listing["jobs"] if j["job_id"] == job_id]
    assert len(mine) == 1
    assert mine[0]["comment"] == tag
    assert mine[0]["user_name"] == "bob"


def test_controller_restart_keeps_running_job(slurm: SlurmCluster) -> None:
    out = slurm.job_dir / f"restart-{uuid.uuid4().hex}.out"
    job_id = sbatch_as(slurm, "alice", "-o", str(out), "--wrap", "sleep 120")
    try:
        wait_state(slurm, job_id, {"RUNNING"})

        slurm.stop_controller()
        down = run(["scontrol", "ping"], env=slurm.command_env(), check=False)
        assert b"DOWN" in down.stdout
        slurm.start_controller()

        assert job_fields(slurm, job_id)["JobState"] == "RUNNING"
    finally:
        subprocess.run(["scancel", str(job_id)], env=slurm.command_env(), check=False)
    assert wait_state(slurm, job_id, TERMINAL) == "CANCELLED"


def test_gpu_partition_grants_fake_gpu(slurm: SlurmCluster) -> None:
    out = slurm.job_dir / f"gpu-{uuid.uuid4().hex}.out"
    job_id = sbatch_as(
        slurm,
        "alice",
        "-p",
        "gpu",
        "--gres=gpu:1",
        "-o",
        str(out),
        "--wrap",
        "echo gpus=$CUDA_VISIBLE_DEVICES",
    )

    assert wait_state(slurm, job_id, TERMINAL) == "COMPLETED"
    assert wait_file(out).strip() == "gpus=0"


def test_sdiag_counts_submissions(slurm: SlurmCluster) -> None:
    before = slurm.sdiag_counts().get("REQUEST_SUBMIT_BATCH_JOB", 0)
    job_id = sbatch_as(slurm, "carol", "-o", "/dev/null", "--wrap", "true")
    wait_state(slurm, job_id, TERMINAL)

    assert slurm.sdiag_counts()["REQUEST_SUBMIT_BATCH_JOB"] == before + 1
