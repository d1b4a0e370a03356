"""A workflow step that runs a Cloud Run job in the simulator (`run_job:`, Workflows'
googleapis.run.v2.projects.locations.jobs.run): the step waits for the execution, fails when
a task gave up (the saga compensates) or the wait times out, and with `wait: false` goes on
at once. The live connector is tests/unit/test_workflows_run_job.py and
tests/integration/test_live_jobs_start.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from surgesim.schema import load_experiment
from surgesim.schema.loading import SchemaError
from surgesim.sim.engine import Engine

SYSTEM = """
name: nightly
topics: [{name: kick}]
subscriptions: [{name: kick-sub, topic: kick, consumer: saga, delivery: push}]
jobs:
  - {name: export, tasks: 2, parallelism: 2, items: 4, batch_size: 1, max_retries: 0, task_timeout: 10m,
     steps: [{cpu: {p50: 30s, p99: 30s}}]}
external_apis: [{name: pager, latency: 100ms}, {name: notify, latency: 100ms}]
workflows:
  - name: saga
    trigger: kick
    steps:
      - {name: reserve, call: pager, compensate: release}
      - {name: run_export, STEP}
      - {name: after, call: notify}
    compensations:
      - {name: release, call: pager}
"""


def run(tmp_path: Path, step: str, faults: str = "") -> Engine:
    (tmp_path / "system.yaml").write_text(SYSTEM.replace("STEP", step))
    (tmp_path / "s.yaml").write_text(f"""
name: s
system: system.yaml
duration: 10m
traffic:
  sources:
    - {{name: kick, rate: 1/m, publish: {{topic: kick}}}}
{faults}
""")
    return Engine(load_experiment(tmp_path / "s.yaml")).run()


def test_the_step_waits_for_the_execution_then_the_workflow_goes_on(tmp_path):
    eng = run(tmp_path, "run_job: export")
    wf, job = eng.workflows["saga"].totals, eng.jobs["export"]
    assert wf["started"] > 3 and wf["jobs_started"] == wf["started"]
    # each execution: 2 tasks x 2 items x 30 s = 60 s; the step waited for it
    assert job.totals["duration_s"] == pytest.approx(60.0 * job.finished)
    assert wf["succeeded"] == job.finished and wf["compensated"] == wf["failed"] == 0
    assert job.record()["executions"] == wf["jobs_started"]
    assert eng.apis["notify"].totals["calls"] == wf["succeeded"]


def test_a_task_that_gives_up_fails_the_step_and_the_saga_compensates(tmp_path):
    eng = run(tmp_path, "run_job: export", faults="""faults:
  - {kind: job_task_crash, target: export, at: 0s, count: 1000}
""")
    wf = eng.workflows["saga"].totals
    assert wf["started"] > 3 and wf["succeeded"] == 0 and wf["compensated"] > 0
    # the crash ends each task at once: every execution fails, none is still running at the end
    assert wf["compensated"] == wf["started"] == eng.jobs["export"].gave_up // 2
    assert eng.apis["notify"].totals["calls"] == 0  # `after` never ran
    assert eng.apis["pager"].totals["calls"] == 2 * wf["compensated"]  # reserve, then release


def test_a_wait_longer_than_the_step_timeout_fails_the_step_and_the_execution_runs_on(tmp_path):
    eng = run(tmp_path, "run_job: export, timeout: 45s")
    wf, job = eng.workflows["saga"].totals, eng.jobs["export"]
    assert wf["succeeded"] == 0 and wf["compensated"] > 0 and eng.apis["notify"].totals["calls"] == 0
    assert job.finished >= wf["compensated"]  # the executions still ended, 60 s each
    assert job.totals["duration_s"] == pytest.approx(60.0 * job.finished)


def test_wait_false_starts_the_execution_and_goes_on_at_once(tmp_path):
    eng = run(tmp_path, "run_job: export, wait: false, timeout: 1s")
    wf = eng.workflows["saga"].totals
    assert wf["succeeded"] == wf["started"] == wf["jobs_started"] > 3
    assert eng.jobs["export"].started == wf["jobs_started"]


@pytest.mark.parametrize("step, says", [
    ("run_job: exprt", "system.yaml:14: workflows[0].steps[1].run_job: job 'exprt' is not declared under jobs (did you mean 'export'?)"),
    ("run_job: export, call: pager", "exactly one of call (a service or external API) or run_job (a job)"),
    ("call: pager, wait: false", "wait: false is for run_job steps"),
    ("call: pager, timeout: 1h", "timeout: a call's is at most 30m, got 1h"),
])
def test_a_run_job_step_is_checked_when_the_files_load(tmp_path, step, says):
    with pytest.raises(SchemaError) as e:
        run(tmp_path, step)
    assert says in str(e.value)


def test_a_run_job_steps_wait_defaults_to_the_connectors_30_minutes(tmp_path):
    (tmp_path / "system.yaml").write_text(SYSTEM.replace("STEP", "run_job: export"))
    (tmp_path / "s.yaml").write_text("name: s\nsystem: system.yaml\nduration: 1m\ntraffic: {sources: [{name: k, rate: 1/m, publish: {topic: kick}}]}\n")
    wf = load_experiment(tmp_path / "s.yaml").system.workflows[0]
    assert wf.steps[1].timeout == 1800.0 and wf.steps[0].timeout == wf.steps[2].timeout == 60.0
