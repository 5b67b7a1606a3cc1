"""The benchmark's spawn timeline reads the daemons' own log lines (formats copied from
slurmctld, slurmd and the operator on this stack)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from benchmarks import timeline

CTLD = """\
[2026-11-26T18:44:02.067] _slurm_rpc_submit_batch_job: JobId=2 InitPrio=4294901758 usec=308
[2026-11-26T18:44:02.088] _slurm_rpc_submit_batch_job: JobId=3 InitPrio=4294901757 usec=285
[2026-11-26T18:44:02.482] sched: Allocate JobId=2 NodeList=vm #CPUs=1 Partition=compute
[2026-11-26T18:44:05.100] sched/backfill: _start_job: Started JobId=3 in compute on vm
[2026-11-26T18:44:06.000] backfill: Started JobId=3 in compute on vm
[2026-11-26T18:44:07.000] sched: Allocate JobId=22 NodeList=vm #CPUs=1 Partition=compute
"""
SLURMD = "[2026-11-26T18:44:02.484] Launching batch job 2 for UID 1002\n"
OPERATOR = """\
2026-11-26 18:44:02,096 INFO hpchub.reconciler: default/load-10-0: Pending -> Submitted (Submitted)
2026-11-26 18:44:03,302 INFO hpchub.reconciler: default/load-10-0: Submitted -> Starting (Starting)
2026-11-26 18:44:03,444 INFO hpchub.reconciler: default/load-10-0: Starting -> Running (Ready)
2026-11-26 18:44:09,000 INFO hpchub.reconciler: default/load-10-0: Running -> Running (Ready)
2026-11-26 18:44:02,901 INFO hpchub_operator.callback: server uid-first reported its start
2026-11-26 18:44:03,400 INFO hpchub_operator.callback: server uid-first reported port 24161
2026-11-26 18:44:04,000 INFO hpchub_operator.callback: server uid-first reported its start
2026-11-26 18:44:05,000 INFO hpchub_operator.callback: server uid-other reported a failure
"""


def at(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    (tmp_path / "slurmctld.log").write_text(CTLD)
    (tmp_path / "slurmd.log").write_text(SLURMD)
    (tmp_path / "operator.log").write_text(OPERATOR)
    return tmp_path


def test_slurm_events_have_milliseconds_and_the_first_start(logs: Path) -> None:
    ev = timeline.slurm_events(logs)
    assert ev["2"] == {"submit": at("2026-11-26 18:44:02.067"),
                       "start": at("2026-11-26 18:44:02.482"),
                       "launch": at("2026-11-26 18:44:02.484")}
    assert ev["3"]["start"] == at("2026-11-26 18:44:05.100")  # the first start line
    assert "submit" not in ev["22"]  # JobId=2 does not match JobId=22


def test_attach_splits_a_spawn_around_slurm(logs: Path) -> None:
    t0 = at("2026-11-26 18:44:01.900")
    runs = [{"t0": t0, "t200": at("2026-11-26 18:44:04.000"), "job_id": "2",
             "server": "load-10-0", "total_s": 2.1},
            {"t0": t0, "t200": t0 + 1, "job_id": "99", "server": None, "total_s": 1.0}]
    timeline.attach(runs, logs, logs / "operator.log")
    r = runs[0]
    assert r["slurm_queue_s"] == pytest.approx(0.415, abs=1e-4)
    assert r["to_submit_s"] == pytest.approx(0.167, abs=1e-4)
    assert r["from_start_s"] == pytest.approx(1.518)
    assert r["start_to_launch_s"] == pytest.approx(0.002, abs=1e-4)
    assert r["running_to_200_s"] == pytest.approx(0.556, abs=1e-4)
    assert runs[1]["slurm_queue_s"] is None and runs[1]["to_submit_s"] is None
    assert "running_to_200_s" not in runs[1]


def test_callback_reports_by_uid_first_of_each_kind(logs: Path) -> None:
    reports = timeline.callback_reports(logs / "operator.log")

    assert reports == {
        "uid-first": {"started": at("2026-11-26 18:44:02.901"),
                                                 "port": at("2026-11-26 18:44:03.400")},
        "uid-other": {"failure": at("2026-11-26 18:44:05.000")},
    }


def test_missing_logs_give_no_events(tmp_path: Path) -> None:
    assert timeline.slurm_events(tmp_path) == {}
    assert timeline.phase_changes(tmp_path / "operator.log") == {}
