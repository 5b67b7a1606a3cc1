"""The job script's start hint against the real callback server.

Over plain HTTP the script's bash sends the hint itself (no process started); when it
cannot (HTTPS, a refusal, nothing listening) it hands over to ``hpchub-launch
--report-started``. A stand-in launcher records that hand-over; the real launcher is tested
in test_launcher.py.
"""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from pathlib import Path

from hpchub_api.models import HPCClusterSpec, JupyterServerSpec
from hpchub_operator import jobscript
from hpchub_operator.callback import server_token
from hpchub_stack.process import free_port

from .fixtures_launcher import SECRET, Operator

STAND_IN = """#!/bin/bash
printf '%s\\n' "$*" >> "${0%/*}/calls"
"""


def script(tmp_path: Path) -> tuple[str, Path]:
    """The rendered job script (no log, no modules) with a stand-in launcher."""
    launcher = tmp_path / "hpchub-launch"
    launcher.write_text(STAND_IN)
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    spec = JupyterServerSpec.model_validate({"user": "alice", "cluster": "c"})
    cluster = HPCClusterSpec.model_validate({
        "slurm": {"backend": "rest", "restUrl": "http://slurm:6820"},
        "launcher": {"command": str(launcher), "logDirectory": ""}})
    return jobscript.render_script(spec, cluster), tmp_path / "calls"


async def run(tmp_path: Path, uid: str, url: str, token: str | None = None) -> list[str]:
    """Run the script (its final launcher call included) until every process it started,
    the background hint too, has finished; return the stand-in's calls."""
    text, calls = script(tmp_path)
    done_r, done_w = os.pipe()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HPCHUB_SERVER_UID": uid,
           "HPCHUB_CALLBACK_URL": url,
           "HPCHUB_CALLBACK_TOKEN": token or server_token(SECRET, uid)}
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", text, env=env, cwd=tmp_path, pass_fds=(done_w,),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    os.close(done_w)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    loop = asyncio.get_running_loop()
    with os.fdopen(done_r, "rb") as done:
        await asyncio.wait_for(loop.run_in_executor(None, done.read), 30)
    assert proc.returncode == 0, out.decode(errors="replace")
    return calls.read_text().splitlines() if calls.exists() else []


async def test_bash_sends_the_hint_over_http(callback_operator: Operator,
                                             tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    callback_operator.expect(uid)
    calls = await run(tmp_path, uid, callback_operator.url + "/")

    assert uid in callback_operator.started
    assert calls == [""]  # only the final exec of the launcher: no hand-over


async def test_a_refused_hint_is_handed_to_the_launcher(callback_operator: Operator,
                                                        tmp_path: Path) -> None:
    uid = str(uuid.uuid4())  # not a server the operator knows: 404
    calls = await run(tmp_path, uid, callback_operator.url)

    assert uid not in callback_operator.started
    assert sorted(calls) == ["", "--report-started"]


async def test_nothing_listening_or_https_is_handed_to_the_launcher(tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    for url in (f"http://127.0.0.1:{free_port()}", "https://operator.example:8081"):
        (tmp_path / "calls").unlink(missing_ok=True)
        assert sorted(await run(tmp_path, uid, url)) == ["", "--report-started"], url


async def test_a_wrong_token_is_refused_and_handed_over(callback_operator: Operator,
                                                        tmp_path: Path) -> None:
    """The operator checks the token on this path as on any other."""
    uid = str(uuid.uuid4())
    callback_operator.expect(uid)
    calls = await run(tmp_path, uid, callback_operator.url, token="0" * 64)

    assert uid not in callback_operator.started
    assert sorted(calls) == ["", "--report-started"]
