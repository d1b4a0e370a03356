"""Cloud Run jobs started by a schedule and by a Workflows step, live: one `surgesim live`
run whose scenario has a `schedule:` source (every scenario minute) and a publish that
starts a workflow whose steps run jobs with googleapis.run.v2.projects.locations.jobs.run
(waiting for the execution, a failing one caught with try/except, one with skip_polling).
The load generator draws a periodic source per 2-wall-second chunk, so time_scale 90 puts
the 3-minute scenario in one chunk and its one live publish at 1m30s.
Every execution goes through the run's Launcher, so it is in jobs/<execution>.json, in
totals.jobs and in jobs.json like a source's. About 30-45 s wall after the emulators."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

WRITE = ("import os; p = os.path.join(os.environ['SEEN'], os.environ['CLOUD_RUN_EXECUTION'] + '-' "
         "+ os.environ['CLOUD_RUN_TASK_INDEX']); open(p, 'w').write(os.environ.get('GREETING', '-'))")

WORKFLOW = """
main:
  params: [event]
  steps:
    - init:
        assign:
          - project: ${sys.get_env("GOOGLE_CLOUD_PROJECT_ID")}
          - base: ${"projects/" + project + "/locations/europe-west1/jobs/"}
    - run_copy:
        call: googleapis.run.v2.projects.locations.jobs.run
        args:
          name: ${base + "copy"}
          body:
            overrides:
              taskCount: 3
              containerOverrides:
                - env:
                    - {name: GREETING, value: hello}
        result: copied
    - run_doomed:
        try:
          call: googleapis.run.v2.projects.locations.jobs.run
          args:
            name: ${base + "doomed"}
            body: {}
          result: never
        except:
          as: e
          steps:
            - keep:
                assign:
                  - failure: ${e}
    - fire_and_forget:
        call: googleapis.run.v2.projects.locations.jobs.run
        args:
          name: ${base + "copy"}
          body: {}
          connector_params: {skip_polling: true}
        result: op
    - done:
        return:
          copied: ${copied}
          failure_tags: ${failure.tags}
          failure_message: ${failure.message}
          op_done: ${op.done}
          op_name: ${op.name}
"""


def _files(tmp_path: Path) -> Path:
    seen = tmp_path / "seen"
    seen.mkdir()
    (tmp_path / "starter.workflow.yaml").write_text(WORKFLOW)
    py = json.dumps([sys.executable, "-c", WRITE])
    (tmp_path / "system.yaml").write_text(f"""
name: jobstarts
project: jobs-local
topics:
  - {{name: kick.jobs}}
subscriptions:
  - {{name: go-sub, topic: kick.jobs, consumer: starter, delivery: push, ack_deadline: 120s}}
jobs:
  - {{name: tick, tasks: 1, max_retries: 0, command: {py}}}
  - {{name: copy, tasks: 1, parallelism: 3, max_retries: 0, command: {py}}}
  - {{name: doomed, tasks: 1, max_retries: 0, command: {json.dumps([sys.executable, "-c", "raise SystemExit(3)"])}}}
external_apis:
  - {{name: run-admin, latency: {{p50: 1s}}}}
workflows:
  - name: starter
    trigger: kick.jobs
    source: starter.workflow.yaml
    steps:
      - {{name: run_jobs, call: run-admin, timeout: 60s}}
""")
    (tmp_path / "scenario.yaml").write_text("""
name: job_starts
system: system.yaml
duration: 3m
traffic:
  sources:
    - {name: every_minute, job: tick, schedule: "* * * * *"}
    # live sends rate x rate_scale / time_scale per scenario second: 90 here become 1
    - {name: kick, rate: 30/m, arrivals: periodic, publish: {topic: kick.jobs, json: {n: 1}}}
checks:
  jobs: {allow: {doomed: 1}, reason: "the workflow's doomed job fails on purpose; its step catches the OperationError"}
live:
  time_scale: 90
  rate_scale: 1
  locust: false
  sample_interval: 1s
  drain_timeout: 40s
""")
    return seen


def test_a_schedule_and_a_workflow_step_start_jobs_live(gcp, tmp_path, monkeypatch):
    seen = _files(tmp_path)
    monkeypatch.setenv("SEEN", str(seen))  # the tasks inherit the harness's environment
    run = tmp_path / "run"
    with open(tmp_path / "live.log", "w") as log:
        rc = subprocess.run([sys.executable, "-m", "surgesim.cli", "live", str(tmp_path / "scenario.yaml"),
                             "--out", str(run), "--state-dir", str(gcp.state_dir)],
                            stdout=log, stderr=subprocess.STDOUT, timeout=240).returncode
    text = (tmp_path / "live.log").read_text()
    assert rc == 0, text[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    jobs_json = json.loads((run / "jobs.json").read_text())
    records = {p.stem: json.loads(p.read_text()) for p in (run / "jobs").glob("*.json")}

    # the schedule: one execution a scenario minute, started when the scaled clock got there
    ticks = sorted((r for r in records.values() if r["job"] == "tick"), key=lambda r: r["started_by"]["due_s"])
    assert [r["started_by"]["due_s"] for r in ticks] == [0.0, 60.0, 120.0]
    assert all(r["started_by"] == {"kind": "schedule", "source": "every_minute", "due_s": r["started_by"]["due_s"]}
               for r in ticks)
    for r in ticks:  # when the scaled clock got there: the harness ticks every 0.2 wall s (18 scenario s)
        assert r["started_by"]["due_s"] <= r["scenario_start_s"] <= r["started_by"]["due_s"] + 45, r
    assert sorted(jobs_json["tick"]["starts_s"]) == sorted(r["scenario_start_s"] for r in ticks)
    assert summary["totals"]["jobs"]["tick"]["executions"] == 3

    # the workflow: one execution, SUCCEEDED, with the finished Execution resource in hand
    lines = (run / "logs" / "workflows" / "starter.jsonl").read_text().splitlines()
    assert len(lines) == 1
    wf = json.loads(lines[0])
    assert wf["state"] == "SUCCEEDED", wf["error"]
    copied = wf["result"]["copied"]
    assert copied["taskCount"] == 3 and copied["succeededCount"] == 3 and copied["failedCount"] == 0
    assert copied["completionTime"] and copied["name"].startswith("projects/jobs-local/locations/europe-west1/jobs/copy/executions/copy-")
    waited = records[copied["name"].rsplit("/", 1)[1]]
    assert waited["state"] == "succeeded" and waited["task_count"] == 3  # the taskCount override
    assert waited["started_by"] == {"kind": "workflow", "workflow": "starter", "step": "main.steps.run_copy"}
    began = dt.datetime.fromisoformat(wf["started_at"]).timestamp()  # the step waited for the execution's end
    assert began <= waited["start"] and waited["end"] <= began + wf["duration_s"] + 0.01
    greetings = [(seen / f"{waited['execution']}-{i}").read_text() for i in range(3)]
    assert greetings == ["hello"] * 3  # the containerOverrides env reached every task

    # the failed execution raised an OperationError the step caught
    assert wf["result"]["failure_tags"] == ["OperationError"]
    assert "doomed-" in wf["result"]["failure_message"] and "failed" in wf["result"]["failure_message"]
    doomed = [r for r in records.values() if r["job"] == "doomed"]
    assert len(doomed) == 1 and doomed[0]["state"] == "failed"

    # skip_polling: the operation came back at once, not done; the run still waited for it
    assert wf["result"]["op_done"] is False
    fire = records[wf["result"]["op_name"].rsplit("/", 1)[1]]
    assert fire["job"] == "copy" and fire["state"] == "succeeded" and fire["task_count"] == 1

    totals = summary["totals"]["jobs"]
    assert totals["copy"]["executions"] == 2 and totals["copy"]["tasks_succeeded"] == 4
    assert totals["doomed"]["failed_executions"] == 1
    assert jobs_json["doomed"]["state"] == "failed"  # its job.NAME SLO would fail, as for a source's
    check = next(c for c in summary["checks"] if "doomed" in c["text"])
    assert check["holds"] and check.get("reason")  # relaxed by checks.jobs, and only so
