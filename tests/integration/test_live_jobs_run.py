"""`surgesim live` with a scenario whose `job:` sources start Cloud Run Job executions:
the tasks run with the run's emulator environment (they reach the Pub/Sub emulator at
PUBSUB_EMULATOR_HOST), the summary's totals.jobs carries each execution's outcome, and a
failed execution fails the verdict (the scenario has no SLO that could). About 30-60 s wall."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TASK = r'''
import json, os, socket, sys, time
out, fail, slow = sys.argv[1], sys.argv[2] == "fail", sys.argv[2] == "slow"
host, port = os.environ["PUBSUB_EMULATOR_HOST"].rsplit(":", 1)
socket.create_connection((host, int(port)), timeout=5).close()  # the run's emulator answers
env = {k: v for k, v in os.environ.items() if k.startswith("CLOUD_RUN_") or k in ("GOOGLE_CLOUD_PROJECT", "K_SERVICE")}
name = f"{os.environ['CLOUD_RUN_JOB']}-{os.environ['CLOUD_RUN_TASK_INDEX']}-{os.environ['CLOUD_RUN_TASK_ATTEMPT']}"
with open(os.path.join(out, name + ".json"), "w") as f:
    json.dump(env, f)
if slow:
    time.sleep(1.0)  # long enough for a crash injected 0.3 s in to land mid-work
sys.exit(1 if fail else 0)
'''


def _files(tmp_path: Path) -> Path:
    (tmp_path / "task.py").write_text(TASK)
    out = tmp_path / "seen"
    out.mkdir()
    cmd = lambda mode: json.dumps([sys.executable, str(tmp_path / "task.py"), str(out), mode])  # noqa: E731
    (tmp_path / "system.yaml").write_text(f"""
name: jobsonly
project: jobs-local
topics:
  - {{name: ticks}}
jobs:
  - {{name: shard-copy, tasks: 4, parallelism: 2, max_retries: 0, command: {cmd("ok")}}}
  - {{name: always-fails, tasks: 1, max_retries: 1, command: {cmd("fail")}}}
  - {{name: resilient, tasks: 2, parallelism: 2, max_retries: 2, task_timeout: 3s, command: {cmd("slow")}}}
""")
    (tmp_path / "scenario.yaml").write_text("""
name: jobs_live
system: system.yaml
duration: 2m
traffic:
  sources:
    - {name: ticks, rate: 1/s, publish: {topic: ticks}}
    - {name: copy, kind: once, at: 0s, job: shard-copy}
    - {name: doomed, kind: once, at: 30s, job: always-fails}
    - {name: faulty, kind: once, at: 12s, job: resilient}
faults:
  # task 0 crashes twice (exit -9, 0.3 s in) and succeeds on its last retry; task 1 hangs once
  - {kind: job_task_crash, target: resilient, at: 0s, count: 2, task: 0, after: 0.3s}
  - {kind: job_task_hang, target: resilient, at: 0s, count: 1, task: 1}
live:
  time_scale: 12
  rate_scale: 1
  locust: false
  sample_interval: 1s
  drain_timeout: 30s
""")
    return out


def test_job_sources_run_live_and_a_failed_execution_fails_the_verdict(gcp, tmp_path):
    seen = _files(tmp_path)
    run = tmp_path / "run"
    with open(tmp_path / "live.log", "w") as log:
        rc = subprocess.run([sys.executable, "-m", "surgesim.cli", "live", str(tmp_path / "scenario.yaml"), "--out", str(run),
                             "--state-dir", str(gcp.state_dir)], stdout=log, stderr=subprocess.STDOUT, timeout=240).returncode
    text = (tmp_path / "live.log").read_text()
    assert rc == 1, text[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    jobs = summary["totals"]["jobs"]
    assert jobs["shard-copy"]["state"] == "succeeded" and jobs["shard-copy"]["tasks_succeeded"] == 4, jobs
    assert jobs["always-fails"]["state"] == "failed" and jobs["always-fails"]["retries"] == 1, jobs
    assert summary["verdict"] == "fail"
    assert "job always-fails: execution always-fails-" in text and "failed: 1 of 1 tasks failed" in text
    assert summary["slos"] == []  # no SLO to fail: the failed execution alone fails the verdict
    for i in range(4):
        env = json.loads((seen / f"shard-copy-{i}-0.json").read_text())
        assert env["CLOUD_RUN_TASK_INDEX"] == str(i) and env["CLOUD_RUN_TASK_COUNT"] == "4"
        assert env["GOOGLE_CLOUD_PROJECT"] == "jobs-local" and "K_SERVICE" not in env
    assert sorted(p.name for p in seen.glob("always-fails-*")) == ["always-fails-0-0.json", "always-fails-0-1.json"]
    records = sorted((run / "jobs").glob("*.json"))
    assert len(records) == 3 and Path(jobs["shard-copy"]["record"]) in records
    # the injected faults: retried within max_retries, counted, and in the report
    res = jobs["resilient"]
    assert res["state"] == "succeeded" and res["crashes"] == 2 and res["timeouts"] == 1 and res["retries"] == 3, res
    rec = json.loads(Path(res["record"]).read_text())
    t0, t1 = rec["tasks"]
    assert [(a["exit_code"], a.get("fault")) for a in t0["attempts"]] == [
        (-9, "job_task_crash"), (-9, "job_task_crash"), (0, None)]
    assert [(a["timed_out"], a.get("fault")) for a in t1["attempts"]] == [(True, "job_task_hang"), (False, None)]
    assert 3.0 <= t1["attempts"][0]["duration_s"] < 6.0  # killed at the 3 s task_timeout
    faults = {f["kind"]: f for f in json.loads((run / "faults.json").read_text())}
    assert [(a["task"], a["attempt"]) for a in faults["job_task_crash"]["details"]["attempts"]] == [(0, 0), (0, 1)]
    assert [(a["task"], a["attempt"]) for a in faults["job_task_hang"]["details"]["attempts"]] == [(1, 0)]
    checks = {c["name"]: c for c in summary["checks"]}
    assert not checks["jobs.always-fails"]["holds"] and checks["jobs.resilient"]["holds"]
    assert checks["faults"]["holds"], checks["faults"]
    html = (run / "report.html").read_text()
    assert "Job executions" in html and "plots/job_tasks.png" in html and (run / "plots" / "job_tasks.png").stat().st_size > 5000
