"""jobscript: the JobRequest and batch script built from a JupyterServer (pure functions).

Hostile values are fed past the models' own validation (``model_construct``), as if the
CRD schema and the webhook had both missed them: each must be refused with a ValueError
naming the field, or reach the program it is meant for as one inert argument. Rendered
scripts are checked with ``bash -n`` and run for real with fake ``module``, ``conda`` and
launcher programs that record the argv they receive.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hpchub_api import patterns
from hpchub_api.models import (
    Defaults,
    EnvironmentSpec,
    HPCClusterSpec,
    JupyterServerSpec,
    LauncherSettings,
    SlurmRequest,
)
from hpchub_operator import jobscript

HOSTILE = [
    "x; touch \"$PWNED\"",
    "$(touch \"$PWNED\")",
    "`touch \"$PWNED\"`",
    "a\ntouch \"$PWNED\"",
    "a\r\ntouch \"$PWNED\"",
    "-rf",
    "--help",
    "#SBATCH --uid=0",
    "gpu\n#SBATCH --partition=admin",
    "x\uff1btouch \"$PWNED\"",  # FULLWIDTH SEMICOLON
    "g\u0441\u0441",  # "gcc" with Cyrillic es
    "\u0430lice",  # Cyrillic a
    "a\x00b",
    "it's",
    "say \"hi\"",
    "a b",
    "$HOME",
    "${IFS}touch${IFS}\"$PWNED\"",
    "a|touch \"$PWNED\"",
    "a&&touch \"$PWNED\"",
    "a>\"$PWNED\"",
    "\\",
    "*",
    "~root",
    "'$(touch \"$PWNED\")'",
    "\t",
    "a\u2028b",  # LINE SEPARATOR
    "\u202eevil",  # RIGHT-TO-LEFT OVERRIDE
    "../../etc/passwd",
    "",
    "a" * 5000,
]
HOSTILE_IDS = [f"h{i}" for i in range(len(HOSTILE))]


# ----------------------------------------------------------------------------- helpers


def spec(**changes: Any) -> JupyterServerSpec:
    """A JupyterServerSpec built without validation (as if every check upstream missed)."""
    env = changes.pop("environment", EnvironmentSpec())
    slurm = changes.pop("slurm", SlurmRequest())
    return JupyterServerSpec.model_construct(
        user=changes.pop("user", "alice"), server_name="", cluster="c", slurm=slurm,
        environment=env, **changes)


def env_spec(**fields: Any) -> EnvironmentSpec:
    base: dict[str, Any] = {"modules": [], "conda_env": None, "working_directory": None,
                            "variables": []}
    return EnvironmentSpec.model_construct(**(base | fields))


def slurm_req(**fields: Any) -> SlurmRequest:
    base = SlurmRequest().model_dump()
    return SlurmRequest.model_construct(**(base | fields))


def cluster(**changes: Any) -> HPCClusterSpec:
    return HPCClusterSpec.model_construct(**(HPCClusterSpec().__dict__ | changes))


def build(server: JupyterServerSpec | None = None, hpc: HPCClusterSpec | None = None,
          uid: str = "0b6d2c7e-1f7a-4c55-9d7e-5f3f7f0c2a11", name: str = "alice-lab",
          environment: dict[str, str] | None = None) -> Any:
    return jobscript.build_request(server or spec(), hpc or cluster(), uid, name,
                                   environment if environment is not None else {})


FAKE_TOOL = """#!/bin/bash
# Record this call's argv (NUL-separated) and working directory in its own file.
if [ "${1:-}" = --report-started ]; then sleep "${HINT_DELAY:-0}"; fi
n=$(date +%s%N)
printf '%s\\0' "${0##*/}" "$PWD" "$@" > "$CALLS/$n-$$"
if [ "${0##*/}" = conda ] && [ "${1:-}" = shell.bash ]; then exit 0; fi
exit 0
"""


NO_LOG = {"log_dir": "", "log_name": "hpchub-x", "log_days": "0"}
"""Template values for a script that keeps no log."""


class Runner:
    """Runs rendered scripts with fake module, conda and hpchub-launch on PATH."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        for tool in ("module", "conda", "hpchub-launch"):
            path = self.bin / tool
            path.write_text(FAKE_TOOL)
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
        self.home = root / "home"
        self.work = root / "work"
        for d in (self.home / "proj", self.work / "a b"):
            d.mkdir(parents=True)
        self.pwned = root / "pwned"
        self.hints: list[list[str]] = []
        """The ``hpchub-launch --report-started`` calls of the last run."""

    def syntax_ok(self, script: str) -> bool:
        """``bash -n``: the script parses."""
        res = subprocess.run(["bash", "-n"], input=script.encode(), capture_output=True,
                             check=False)
        return res.returncode == 0

    def run(self, script: str, tools: tuple[str, ...] = ("module", "conda", "hpchub-launch"),
            hint_delay: float = 0) -> tuple[int, list[list[str]]]:
        """Run the script (without the login-shell flag); return (status, calls). The start
        hint takes ``hint_delay`` seconds before it is recorded."""
        calls = self.root / "calls"
        calls.mkdir(exist_ok=True)
        for old in calls.iterdir():
            old.unlink()
        bin_dir = self.root / "bin-active"
        bin_dir.mkdir(exist_ok=True)
        for link in bin_dir.iterdir():
            link.unlink()
        for tool in tools:
            (bin_dir / tool).symlink_to(self.bin / tool)
        script_path = self.root / "job.sh"
        script_path.write_text(script)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(self.home),
               "WORK": str(self.work), "CALLS": str(calls), "PWNED": str(self.pwned),
               "HINT_DELAY": str(hint_delay)}
        # Every process the script starts inherits this pipe's write end (the script's own
        # redirections move only 1 and 2): EOF means the background hint has finished too.
        done_r, done_w = os.pipe()
        try:
            res = subprocess.run(["bash", str(script_path)], env=env, cwd=self.root,
                                 capture_output=True, check=False, timeout=30,
                                 pass_fds=(done_w,))
            os.close(done_w)
            done_w = -1
            with os.fdopen(done_r, "rb") as done:
                done_r = -1
                done.read()
        finally:
            for fd in (done_r, done_w):
                if fd >= 0:
                    os.close(fd)
        found = []
        self.hints = []
        for path in sorted(calls.iterdir()):
            call = path.read_bytes().decode().split("\0")[:-1]
            # The start hint runs in the background: kept apart, its order is not fixed.
            (self.hints if call[2:] == ["--report-started"] else found).append(call)
        return res.returncode, found


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


# ----------------------------------------------------------------------------- build_request


def test_build_request_fills_gaps_from_cluster_defaults() -> None:
    hpc = cluster(defaults=Defaults(partition="compute", account="proj-astro",
                                    time_limit="2:30:00", cpus_per_task=2, memory="4G"))

    req = build(hpc=hpc)

    assert (req.partition, req.account) == ("compute", "proj-astro")
    assert req.time_limit_minutes == 150
    assert req.cpus_per_task == 2
    assert req.memory_mb == 4096
    assert req.gres is None


def test_build_request_prefers_the_spec() -> None:
    hpc = cluster(defaults=Defaults(partition="compute", account="a", memory="4G"))
    server = spec(slurm=SlurmRequest(partition="gpu", account="proj-gpu", qos="long",
                                     reservation="course", nodes=2, cpus_per_task=8,
                                     memory="500M", gpus=2, gpu_type="a100",
                                     time_limit="1-12", constraint="ib&avx2"))

    req = build(server, hpc)

    assert (req.partition, req.account, req.qos, req.reservation) == (
        "gpu", "proj-gpu", "long", "course")
    assert (req.nodes, req.cpus_per_task, req.memory_mb) == (2, 8, 500)
    assert req.gres == "gpu:a100:2"
    assert req.time_limit_minutes == 36 * 60
    assert req.constraint == "ib&avx2"


@pytest.mark.parametrize(("limit", "minutes"), [
    ("30", 30), ("1:30", 2), ("0:59", 1), ("1:00:00", 60), ("2-0", 2880),
    ("1-02:03", 1563), ("1-00:00:01", 1441),
])
def test_time_limit_rounds_up_to_minutes(limit: str, minutes: int) -> None:
    req = build(spec(slurm=SlurmRequest(time_limit=limit)))

    assert req.time_limit_minutes == minutes


@pytest.mark.parametrize(("gpus", "gpu_type", "gres"), [
    (0, None, None), (0, "a100", None), (1, None, "gpu:1"), (4, "h100", "gpu:h100:4"),
])
def test_gres(gpus: int, gpu_type: str | None, gres: str | None) -> None:
    assert build(spec(slurm=SlurmRequest(gpus=gpus, gpu_type=gpu_type))).gres == gres


def test_identity_fields() -> None:
    req = build(name="alice-lab", uid="0b6d2c7e-1f7a")

    assert req.user == "alice"
    assert req.name == "hpchub-alice-lab"
    assert req.comment == "hpchub:0b6d2c7e-1f7a"
    assert req.script == jobscript.render_script(spec(), cluster(), "hpchub-alice-lab")


def test_job_name_is_sanitized_and_bounded() -> None:
    assert jobscript.job_name("a b;c\u0441") == "hpchub-a_b_c_"
    assert len(jobscript.job_name("x" * 200)) == jobscript.MAX_JOB_NAME


@pytest.mark.parametrize(("workdir", "cwd"), [
    (None, "/tmp"), ("", "/tmp"), ("~/proj", "/tmp"), ("$WORK", "/tmp"),
    ("/scratch/alice/run", "/scratch/alice/run"), ("/", "/"),
])
def test_slurm_working_directory(workdir: str | None, cwd: str) -> None:
    req = build(spec(environment=env_spec(working_directory=workdir)))

    assert req.working_directory == cwd


def test_environment_goes_to_the_request_never_the_script() -> None:
    secret = "hub-token-9f8e7d"
    req = build(environment={"JUPYTERHUB_API_TOKEN": secret, "X": "a; b $(c) `d`"})

    assert req.environment == {"JUPYTERHUB_API_TOKEN": secret, "X": "a; b $(c) `d`"}
    assert secret not in req.script
    assert "JUPYTERHUB" not in req.script


# ----------------------------------------------------------------------------- hostile input


def _inject(field: str, value: str) -> dict[str, Any]:
    """build() keyword arguments that put ``value`` into ``field``."""
    slurm_fields = {"slurm.partition": "partition", "slurm.account": "account",
                    "slurm.qos": "qos", "slurm.reservation": "reservation",
                    "slurm.memory": "memory", "slurm.timeLimit": "time_limit",
                    "slurm.gpuType": "gpu_type", "slurm.constraint": "constraint"}
    if field in slurm_fields:
        return {"server": spec(slurm=slurm_req(gpus=1, **{slurm_fields[field]: value}))}
    env_fields = {"environment.modules[0]": ("modules", [value]),
                  "environment.condaEnv": ("conda_env", value),
                  "environment.workingDirectory": ("working_directory", value)}
    if field in env_fields:
        key, raw = env_fields[field]
        return {"server": spec(environment=env_spec(**{key: raw}))}
    if field == "launcher.command":
        launcher = LauncherSettings.model_construct(command=value)
        return {"hpc": cluster(launcher=launcher)}
    if field == "user":
        return {"server": spec(user=value)}
    if field in ("name", "uid"):
        return {field: value}
    if field == "environment name":
        return {"environment": {value: "v"}}
    assert field == "environment[X]"
    return {"environment": {"X": value}}


FIELDS = {
    "environment.modules[0]": patterns.MODULE,
    "environment.condaEnv": patterns.CONDA_ENV,
    "environment.workingDirectory": patterns.WORKDIR,
    "launcher.command": jobscript.LAUNCHER,
    "user": patterns.USER,
    "name": patterns.K8S_NAME,
    "uid": jobscript.UID,
    "slurm.partition": patterns.SLURM_NAME,
    "slurm.account": patterns.SLURM_NAME,
    "slurm.qos": patterns.SLURM_NAME,
    "slurm.reservation": patterns.SLURM_NAME,
    "slurm.memory": patterns.MEMORY,
    "slurm.timeLimit": patterns.TIME_LIMIT,
    "slurm.gpuType": patterns.GPU_TYPE,
    "slurm.constraint": patterns.CONSTRAINT,
    "environment name": patterns.ENV_NAME,
    "environment[X]": patterns.ENV_VALUE,
}
# Values the patterns accept, so they must come out as inert literals instead.
ACCEPTED = {
    ("environment.workingDirectory", "$HOME"),
    ("environment.workingDirectory", ""),
    *(("environment[X]", v) for v in HOSTILE
      if patterns.matches(patterns.ENV_VALUE, v) and len(v) <= 4096),
}
NOT_SET = {("slurm.partition", ""), ("slurm.account", ""), ("slurm.memory", ""),
           ("slurm.timeLimit", "")}  # "" means "unset": the cluster default applies


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize("value", HOSTILE, ids=HOSTILE_IDS)
def test_hostile_value_is_refused_or_inert(field: str, value: str) -> None:
    kwargs = _inject(field, value)
    if (field, value) in ACCEPTED or (field, value) in NOT_SET:
        req = build(**kwargs)
        # Accepted values leave the script as for the defaults (home directory, no env).
        assert req.script == build().script
        if field == "environment[X]":
            assert req.environment == {"X": value}
        return
    with pytest.raises(ValueError, match=r"^" + field.replace("[", r"\[").replace("]", r"\]")
                       + ": "):
        build(**kwargs)


def test_every_hostile_script_value_is_refused_by_render_script() -> None:
    """The fields that reach the script refuse each hostile value (but the home dir)."""
    for value in HOSTILE:
        for field in ("environment.modules[0]", "environment.condaEnv",
                      "environment.workingDirectory", "launcher.command"):
            if (field, value) in ACCEPTED:
                continue
            kwargs = _inject(field, value)
            with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
                jobscript.render_script(kwargs.get("server", spec()),
                                        kwargs.get("hpc", cluster()))


@pytest.mark.parametrize("value", [v for v in HOSTILE if "\x00" not in v], ids=[
    i for i, v in zip(HOSTILE_IDS, HOSTILE, strict=True) if "\x00" not in v])
def test_template_quotes_hostile_values_into_inert_arguments(runner: Runner, value: str
                                                             ) -> None:
    """Even with validation bypassed, the template hands each value over as one argument."""
    script = jobscript.SCRIPT.render({
        **NO_LOG,
        "modules": [value, "second"], "conda_env": value or "base",
        "workdir_base": "HOME", "workdir_path": "/proj", "launcher": "hpchub-launch",
    })

    assert runner.syntax_ok(script)
    status, calls = runner.run(script)

    assert not runner.pwned.exists()
    assert status == 0, calls
    assert calls == [
        ["module", str(runner.root), "load", value],
        ["module", str(runner.root), "load", "second"],
        ["conda", str(runner.root), "shell.bash", "hook"],
        ["conda", str(runner.root), "activate", value or "base"],
        ["hpchub-launch", str(runner.home / "proj")],
    ]


@pytest.mark.parametrize("value", [v for v in HOSTILE if "\x00" not in v and v],
                         ids=[i for i, v in zip(HOSTILE_IDS, HOSTILE, strict=True)
                              if "\x00" not in v and v])
def test_template_workdir_and_launcher_stay_literal(runner: Runner, value: str) -> None:
    """A hostile path or launcher is looked up literally (and not found), never run."""
    for values in ({"workdir_path": "/" + value, "launcher": "hpchub-launch"},
                   {"workdir_path": "/proj", "launcher": value}):
        script = jobscript.SCRIPT.render({**NO_LOG, "modules": [], "conda_env": "",
                                          "workdir_base": "HOME", **values})
        assert runner.syntax_ok(script)
        status, calls = runner.run(script)
        assert not runner.pwned.exists()
        if values["launcher"] == "hpchub-launch":
            # The bad directory is reported by the launcher, with the path as a literal.
            assert len(calls) == 1 and calls[0][0] == "hpchub-launch", calls
            assert calls[0][2:] == ["--report-failure", "cannot enter the working directory "
                                    f"{runner.home}/{value}"]
        else:
            assert status != 0
            assert calls == []


def test_no_sbatch_directives_can_be_injected() -> None:
    """sbatch reads #SBATCH only before the first command: ours come after ``set -u``."""
    script = jobscript.SCRIPT.render({
        "log_dir": "\n#SBATCH -A root", "log_name": "hpchub-x", "log_days": "0",
        "modules": ["x\n#SBATCH --uid=0"], "conda_env": "\n#SBATCH -p admin",
        "workdir_base": "", "workdir_path": "/", "launcher": "hpchub-launch",
    })
    lines = script.splitlines()
    first_command = next(i for i, line in enumerate(lines)
                         if line.strip() and not line.startswith("#"))

    assert lines[first_command] == "set -u"
    assert not any(line.startswith("#SBATCH") for line in lines[:first_command])


def test_template_has_no_raw_substitution() -> None:
    """Every placeholder of the template is in a position QuotedTemplate fills quoted."""
    placeholders = {m.group("named") or m.group("braced")
                    for m in jobscript.SCRIPT.pattern.finditer(jobscript.SCRIPT.template)
                    if m.group("named") or m.group("braced")}

    assert placeholders == {"modules", "conda_env", "workdir_base", "workdir_path",
                            "launcher", "log_dir", "log_name", "log_days"}
    with pytest.raises(KeyError):
        jobscript.SCRIPT.render({"modules": []})


# ----------------------------------------------------------------------------- behaviour


def test_rendered_script_runs_modules_conda_cd_launcher(runner: Runner) -> None:
    server = spec(environment=env_spec(modules=["gcc/12.2", "python/3.11+ml"],
                                       conda_env="/opt/conda/envs/ml-2.1",
                                       working_directory="$WORK/a b".replace(" ", "-")))
    (runner.work / "a-b").mkdir()

    script = jobscript.render_script(server, cluster())
    status, calls = runner.run(script)

    assert status == 0
    assert [c[2:] for c in calls] == [["load", "gcc/12.2"], ["load", "python/3.11+ml"],
                                      ["shell.bash", "hook"],
                                      ["activate", "/opt/conda/envs/ml-2.1"], []]
    assert calls[-1][:2] == ["hpchub-launch", str(runner.work / "a-b")]


def test_start_hint_goes_out_at_once_and_nothing_waits_for_it(runner: Runner) -> None:
    """The hint is the script's first call, made in the background: a slow one (an operator
    far away) delays neither the modules nor the launcher."""
    script = jobscript.render_script(spec(environment=env_spec(modules=["gcc/12.2"])),
                                     cluster())
    hint_at = script.index("\nhpchub_report_started &\n")
    assert hint_at < script.index('module load "${hpchub_module}"')

    status, calls = runner.run(script, hint_delay=1.0)

    assert status == 0
    assert [c[0] for c in calls] == ["module", "hpchub-launch"]
    assert runner.hints == [["hpchub-launch", str(runner.root), "--report-started"]]
    # Call files are named by the time they were written: the hint's came last.
    names = sorted(p.name for p in (runner.root / "calls").iterdir())
    hint_file = (runner.root / "calls" / names[-1]).read_bytes().split(b"\0")
    assert hint_file[2] == b"--report-started"


def test_start_hint_is_sent_even_when_the_environment_then_fails(runner: Runner) -> None:
    script = jobscript.render_script(spec(environment=env_spec(conda_env="ml")), cluster())

    _status, calls = runner.run(script, tools=("module", "hpchub-launch"))

    assert len(runner.hints) == 1
    assert calls[-1][2:3] == ["--report-failure"]


@pytest.mark.parametrize(("workdir", "expected"), [
    (None, "home"), ("~", "home"), ("~/proj", "home/proj"), ("$HOME/proj/", "home/proj"),
    ("$WORK", "work"),
])
def test_working_directory_expansion(runner: Runner, workdir: str | None, expected: str
                                     ) -> None:
    script = jobscript.render_script(spec(environment=env_spec(working_directory=workdir)),
                                     cluster())

    status, calls = runner.run(script)

    assert status == 0
    assert calls[-1][:2] == ["hpchub-launch", str(runner.root / expected)]


def test_unset_site_variable_fails_clearly(runner: Runner) -> None:
    script = jobscript.render_script(
        spec(environment=env_spec(working_directory="$SCRATCH/x")), cluster())

    _status, calls = runner.run(script)

    assert [c[:1] + c[2:] for c in calls] == [
        ["hpchub-launch", "--report-failure", "$SCRATCH is not set on this node"]]


def test_modules_skipped_without_module_command(runner: Runner) -> None:
    script = jobscript.render_script(spec(environment=env_spec(modules=["gcc"])), cluster())

    status, calls = runner.run(script, tools=("hpchub-launch",))

    assert status == 0
    assert [c[0] for c in calls] == ["hpchub-launch"]


def test_conda_env_without_conda_fails(runner: Runner) -> None:
    script = jobscript.render_script(spec(environment=env_spec(conda_env="ml")), cluster())

    _status, calls = runner.run(script, tools=("module", "hpchub-launch"))

    assert [c[:1] + c[2:] for c in calls] == [
        ["hpchub-launch", "--report-failure",
         "conda environment ml requested but no conda on this node"]]


def test_absolute_launcher(runner: Runner) -> None:
    launcher = runner.root / "opt" / "launch"
    launcher.parent.mkdir()
    launcher.symlink_to(runner.bin / "hpchub-launch")
    hpc = cluster(launcher=LauncherSettings(command=str(launcher)))

    status, calls = runner.run(jobscript.render_script(spec(), hpc))

    assert status == 0
    assert calls == [["launch", str(runner.home)]]


def test_script_header() -> None:
    script = jobscript.render_script(spec(), cluster())

    assert script.startswith("#!/bin/bash -l\n")
    assert os.linesep == "\n" and "\r" not in script


# ----------------------------------------------------------------------------- job log


def _logs(directory: Path) -> list[Path]:
    return sorted(directory.glob("hpchub-*.log")) if directory.is_dir() else []


def test_the_job_writes_its_log_below_home(runner: Runner) -> None:
    hpc = cluster(launcher=LauncherSettings(log_directory=".hpchub/logs"))
    script = jobscript.render_script(spec(environment=env_spec(conda_env="ml")), hpc,
                                     "hpchub-alice-lab")

    status, _ = runner.run(script, tools=("module", "hpchub-launch"))  # no conda here

    log_dir = runner.home / ".hpchub" / "logs"
    [log] = _logs(log_dir)
    assert status == 0
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    assert log.name.startswith("hpchub-alice-lab-") and log.name.endswith(".log")
    text = log.read_text()
    assert text.startswith("hpchub: hpchub-alice-lab (job none) on ")
    # What went wrong before the launcher is in the log, for the user to read.
    assert "hpchub: conda environment ml requested but no conda on this node" in text


def test_old_logs_are_removed_and_others_kept(runner: Runner) -> None:
    log_dir = runner.root / "abs-logs"
    log_dir.mkdir()
    old, recent, other = (log_dir / "hpchub-old-1.log", log_dir / "hpchub-new-2.log",
                          log_dir / "notes.log")
    for path in (old, recent, other):
        path.write_text("x")
    forty_days_ago = os.stat(old).st_mtime - 40 * 86400
    os.utime(old, (forty_days_ago, forty_days_ago))
    os.utime(other, (forty_days_ago, forty_days_ago))
    hpc = cluster(launcher=LauncherSettings(log_directory=str(log_dir),
                                            log_retention_days=30))

    runner.run(jobscript.render_script(spec(), hpc))

    assert not old.exists() and recent.exists() and other.exists()
    assert len(_logs(log_dir)) == 2  # recent + this job's


def test_no_log_directory_keeps_no_log(runner: Runner) -> None:
    hpc = cluster(launcher=LauncherSettings(log_directory=""))
    status, calls = runner.run(jobscript.render_script(spec(), hpc))
    assert status == 0 and calls[-1][0] == "hpchub-launch"
    assert not (runner.home / ".hpchub").exists()


def test_an_unwritable_log_directory_does_not_stop_the_job(runner: Runner) -> None:
    blocker = runner.root / "a-file"
    blocker.write_text("not a directory")
    hpc = cluster(launcher=LauncherSettings(log_directory=f"{blocker}/logs"))
    status, calls = runner.run(jobscript.render_script(spec(), hpc))
    assert status == 0 and calls[-1][0] == "hpchub-launch"


@pytest.mark.parametrize("value", ["../etc", "logs/../..", "a b", "$HOME/x", "~/x", "x;y",
                                   "/", "logs/"])
def test_log_directory_values_outside_the_pattern_are_refused(value: str) -> None:
    hpc = cluster(launcher=LauncherSettings.model_construct(
        **(LauncherSettings().__dict__ | {"log_directory": value})))
    if patterns.matches(patterns.LOG_DIRECTORY, value):
        jobscript.render_script(spec(), hpc)  # accepted values are quoted literals
    else:
        with pytest.raises(ValueError, match=r"launcher\.logDirectory"):
            jobscript.render_script(spec(), hpc)


def test_log_file_shown_in_status() -> None:
    relative = cluster(launcher=LauncherSettings(log_directory=".hpchub/logs"))
    absolute = cluster(launcher=LauncherSettings(log_directory="/scratch/logs"))
    none = cluster(launcher=LauncherSettings(log_directory=""))
    assert jobscript.log_file(relative, "hpchub-lab", "42") == "~/.hpchub/logs/hpchub-lab-42.log"
    assert jobscript.log_file(absolute, "hpchub-lab", "42") == "/scratch/logs/hpchub-lab-42.log"
    assert jobscript.log_file(none, "hpchub-lab", "42") is None
