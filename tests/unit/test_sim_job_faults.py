"""Job faults in the simulator (sim/engine.py JobRunner): job_task_crash and job_task_hang
hit the first `count` attempts that start in their window, the task is retried up to
max_retries, and the totals count them; a fault on something that is not a job is refused
at validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from surgesim.schema import load_experiment
from surgesim.schema.loading import SchemaError
from surgesim.sim.engine import Engine

SYSTEM = """\
name: batchy
jobs:
  - name: sweep
    tasks: 3
    parallelism: 3
    items: 30
    batch_size: 1
    max_retries: 2
    task_timeout: 60s
    steps:
      - cpu: {p50: 1s, p99: 1s}
"""

SCENARIO = """\
name: s
system: system.yaml
duration: 30m
traffic:
  sources:
    - {name: go, kind: once, at: 10s, job: sweep}
faults:
FAULTS
"""


def run(tmp_path: Path, faults: str) -> dict:
    (tmp_path / "system.yaml").write_text(SYSTEM)
    (tmp_path / "s.yaml").write_text(SCENARIO.replace("FAULTS", faults))
    eng = Engine(load_experiment(tmp_path / "s.yaml"))
    eng.run()
    return eng.totals()["jobs"]["sweep"]


def test_without_faults_every_task_runs_once(tmp_path):
    t = run(tmp_path, "  []")
    assert t["tasks_run"] == 3 and t["tasks_failed"] == 0 and t["crashes"] == 0 and t["timeouts"] == 0
    assert 9.0 <= t["duration_s"] < 13.0  # 10 batches of ~1 s per task, 3 in parallel


def test_a_crash_within_max_retries_is_retried_and_counted(tmp_path):
    t = run(tmp_path, "  - {kind: job_task_crash, target: sweep, at: 0s, count: 2, task: 1, after: 2s}")
    assert t["crashes"] == 2 and t["tasks_failed"] == 2 and t["tasks_run"] == 5
    assert 13.0 <= t["duration_s"] < 17.0  # task 1: two 2 s attempts, then its ~10 s


def test_a_hang_lasts_task_timeout_before_the_retry(tmp_path):
    t = run(tmp_path, "  - {kind: job_task_hang, target: sweep, at: 0s, count: 1, task: 0}")
    assert t["timeouts"] == 1 and t["crashes"] == 0 and t["tasks_run"] == 4
    assert 69.0 <= t["duration_s"] < 73.0  # 60 s hung, then the ~10 s attempt


def test_a_fault_outside_its_window_hits_nothing(tmp_path):
    t = run(tmp_path, "  - {kind: job_task_crash, target: sweep, at: 20m, count: 3}")
    assert t["crashes"] == 0 and t["tasks_run"] == 3


def test_a_job_fault_on_something_that_is_not_a_job_is_refused(tmp_path):
    with pytest.raises(SchemaError, match="'swept' is not a job of system 'batchy'"):
        run(tmp_path, "  - {kind: job_task_crash, target: swept, at: 0s}")
