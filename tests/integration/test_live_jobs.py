"""Cloud Run Jobs live (surgesim/live/jobs.py) with real task processes: each task is a
small Python script written here that records what it saw and when it ran."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from surgesim.live.jobs import Execution, summary
from surgesim.schema.system import Job

pytestmark = pytest.mark.integration

TASK = r'''
import json, os, sys, time
out, behaviour, sleep = sys.argv[1], sys.argv[2], float(sys.argv[3])
env = {k: v for k, v in os.environ.items() if k.startswith("CLOUD_RUN_") or k == "EMULATOR_HOST"}
began = time.time()
attempt = int(os.environ["CLOUD_RUN_TASK_ATTEMPT"])
name = f"task{os.environ['CLOUD_RUN_TASK_INDEX']}-attempt{attempt}"
with open(os.path.join(out, name + ".start"), "w") as f:
    json.dump({"env": env, "start": began}, f)
if behaviour == "hang-first" and attempt == 0:
    time.sleep(3600)
time.sleep(sleep)
with open(os.path.join(out, name + ".json"), "w") as f:
    json.dump({"env": env, "start": began, "end": time.time()}, f)
if behaviour == "always-fail" or (behaviour == "fail-first" and attempt == 0):
    print("failing on purpose", flush=True)
    sys.exit(1)
'''


def _job(tmp_path: Path, behaviour: str = "ok", sleep: float = 0.0, **kw) -> tuple[Job, Path]:
    script = tmp_path / "task.py"
    script.write_text(TASK)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, str(script), str(out), behaviour, str(sleep)]
    return Job(name="backfill", command=cmd, **kw), out


def test_every_task_gets_its_shard_and_parallelism_is_never_exceeded(tmp_path):
    job, out = _job(tmp_path, sleep=0.3, tasks=6, parallelism=2, max_retries=0)
    ex = Execution(job, tmp_path / "run", env={"EMULATOR_HOST": "127.0.0.1:1"})
    rec = ex.run()
    assert rec["state"] == "succeeded" and rec["succeeded"] == 6
    seen = [json.loads((out / f"task{i}-attempt0.json").read_text()) for i in range(6)]
    for i, s in enumerate(seen):
        assert s["env"] == {"CLOUD_RUN_TASK_INDEX": str(i), "CLOUD_RUN_TASK_COUNT": "6",
                            "CLOUD_RUN_TASK_ATTEMPT": "0", "CLOUD_RUN_EXECUTION": ex.name,
                            "CLOUD_RUN_JOB": "backfill", "EMULATOR_HOST": "127.0.0.1:1"}
    assert ex.name.startswith("backfill-") and len(ex.name) == len("backfill-") + 5
    # at any task's start, how many tasks (by their own clocks) were running
    overlap = max(sum(1 for o in seen if o["start"] <= s["start"] < o["end"]) for s in seen)
    assert overlap == 2  # 2 at once, never 3 (6 tasks of 0.3s: a limit that failed would show)
    assert 0.9 <= rec["duration_s"] < 3.0  # 3 waves of 0.3s
    on_disk = json.loads(ex.path.read_text())
    assert on_disk["state"] == "succeeded"
    assert [t["state"] for t in on_disk["tasks"]] == ["succeeded"] * 6
    assert all(t["exit_code"] == 0 and len(t["attempts"]) == 1 for t in on_disk["tasks"])


def test_a_task_failing_once_is_retried_with_the_next_attempt_number(tmp_path):
    job, out = _job(tmp_path, behaviour="fail-first", tasks=2, parallelism=2, max_retries=2)
    rec = Execution(job, tmp_path / "run").run()
    assert rec["state"] == "succeeded" and rec["retries"] == 2
    for t in rec["tasks"]:
        assert [a["exit_code"] for a in t["attempts"]] == [1, 0]
        assert t["state"] == "succeeded"
        assert json.loads((out / f"task{t['index']}-attempt1.json").read_text())["env"]["CLOUD_RUN_TASK_ATTEMPT"] == "1"
        assert "failing on purpose" in Path(t["attempts"][0]["log"]).read_text()


def test_a_task_that_always_fails_fails_the_execution_after_max_retries_plus_one(tmp_path):
    job, out = _job(tmp_path, behaviour="always-fail", tasks=1, max_retries=2)
    ex = Execution(job, tmp_path / "run")
    rec = ex.run()
    assert rec["state"] == "failed" and rec["failed"] == 1
    task = rec["tasks"][0]
    assert task["state"] == "failed" and task["exit_code"] == 1
    assert [a["attempt"] for a in task["attempts"]] == [0, 1, 2]
    assert sorted(p.name for p in out.glob("*.json")) == [f"task0-attempt{i}.json" for i in range(3)]
    totals = summary([ex])["backfill"]
    assert totals["failed_executions"] == 1 and totals["state"] == "failed" and totals["retries"] == 2


def test_a_task_hanging_past_its_timeout_is_killed_and_retried(tmp_path):
    job, out = _job(tmp_path, behaviour="hang-first", tasks=1, max_retries=1, task_timeout=1.0)
    t0 = time.monotonic()
    rec = Execution(job, tmp_path / "run").run()
    assert time.monotonic() - t0 < 10  # not the hour it sleeps
    first, second = rec["tasks"][0]["attempts"]
    assert first["timed_out"] and first["exit_code"] != 0 and 1.0 <= first["duration_s"] < 4.0
    assert not second["timed_out"] and second["exit_code"] == 0
    assert rec["state"] == "succeeded"
    assert not (out / "task0-attempt0.json").exists()  # the hung attempt never finished
    # its whole process group is gone
    pid = first["pid"]
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_hang_on_every_attempt_fails_the_execution(tmp_path):
    job, _ = _job(tmp_path, behaviour="ok", sleep=30, tasks=1, max_retries=0, task_timeout=1.0)
    rec = Execution(job, tmp_path / "run").run()
    assert rec["state"] == "failed"
    assert rec["tasks"][0]["attempts"][0]["timed_out"]


def test_a_job_without_a_command_cannot_run_live(tmp_path):
    with pytest.raises(ValueError, match="backfill: no command"):
        Execution(Job(name="backfill"), tmp_path)


def test_the_launcher_starts_each_job_source_at_its_time_with_the_plan_overrides(tmp_path):
    from surgesim.live.jobs import Launcher
    from surgesim.schema.plan import JobPlan
    from surgesim.schema.scenario import Source

    job, out = _job(tmp_path, tasks=5, parallelism=1)
    flaky, _ = _job(tmp_path, behaviour="always-fail")
    flaky = flaky.model_copy(update={"name": "flaky", "max_retries": 0})
    sources = [Source(name="late", kind="once", at=10.0, job="flaky"),
               Source(name="first", kind="once", at=0.0, job="backfill")]
    asked = []
    launcher = Launcher(sources, [job, flaky], tmp_path / "run", lambda j: asked.append(j) or {"EMULATOR_HOST": "h:1"},
                        plan_jobs={"backfill": JobPlan(tasks=3, parallelism=3)}, say=lambda m: None)
    launcher.tick(5.0)
    assert [ex.job.name for ex in launcher.executions] == ["backfill"] and not launcher.idle()
    deadline = time.monotonic() + 20
    while not launcher.executions[0].done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert launcher.executions[0].record["task_count"] == 3  # the plan's tasks, not the job's 5
    assert not launcher.idle()  # the flaky source is still to come
    launcher.tick(10.0)
    launcher.executions[1].wait(20)
    assert launcher.idle() and asked == ["backfill", "flaky"]
    assert launcher.failed() == [launcher.executions[1].name]
    totals = launcher.totals()
    assert totals["backfill"]["state"] == "succeeded" and totals["backfill"]["tasks_succeeded"] == 3
    assert totals["flaky"]["state"] == "failed" and totals["flaky"]["tasks_failed"] == 1
    assert totals["backfill"]["task_seconds"] > 0


def test_a_job_source_naming_a_job_without_a_command_is_refused_before_the_run(tmp_path):
    from surgesim.live.jobs import Launcher
    from surgesim.schema.scenario import Source

    with pytest.raises(ValueError, match="source go: job backfill has no command"):
        Launcher([Source(name="go", kind="once", at=0.0, job="backfill")], [Job(name="backfill")], tmp_path, dict)


# ---- injected faults (surgesim/live/job_faults.py): the task program itself is healthy ----


def _fault(kind: str, **kw):
    from surgesim.schema.scenario import Fault

    return Fault.model_validate({"kind": kind, "at": 0, "target": "backfill", **kw})


def test_an_injected_crash_is_retried_up_to_max_retries_and_then_fails_the_task(tmp_path):
    from surgesim.live.job_faults import TaskFaults

    job, out = _job(tmp_path, sleep=1.0, tasks=2, parallelism=1, max_retries=2)
    faults, details = TaskFaults(), {}
    crash = _fault("job_task_crash", count=3, task=0, after="0.3s")
    faults.start(crash, details)
    ex = Execution(job, tmp_path / "run", on_attempt=faults.on_attempt)
    rec = ex.run()
    assert faults.end(crash) == 3
    t0, t1 = rec["tasks"]
    # task 0: every one of its max_retries + 1 attempts killed 0.3 s in (SIGKILL), then it fails
    assert [a["exit_code"] for a in t0["attempts"]] == [-9, -9, -9] and t0["state"] == "failed"
    assert all(a["fault"] == "job_task_crash" and not a["timed_out"] and a["duration_s"] < 0.9 for a in t0["attempts"])
    assert not list(out.glob("task0-attempt*.json"))  # no attempt got to the end of its work
    # task 1 is not targeted: one clean attempt
    assert [a["exit_code"] for a in t1["attempts"]] == [0] and "fault" not in t1["attempts"][0]
    assert rec["state"] == "failed" and rec["retries"] == 2
    assert [(a["task"], a["attempt"]) for a in details["attempts"]] == [(0, 0), (0, 1), (0, 2)]
    totals = summary([ex])["backfill"]
    assert totals["crashes"] == 3 and totals["timeouts"] == 0 and totals["failed_executions"] == 1


def test_an_injected_crash_within_the_retries_is_survived(tmp_path):
    from surgesim.live.job_faults import TaskFaults

    job, out = _job(tmp_path, sleep=0.5, tasks=1, max_retries=2)
    faults = TaskFaults()
    faults.start(_fault("job_task_crash", count=2), {})
    rec = Execution(job, tmp_path / "run", on_attempt=faults.on_attempt).run()
    assert [a["exit_code"] for a in rec["tasks"][0]["attempts"]] == [-9, -9, 0]
    assert rec["state"] == "succeeded" and (out / "task0-attempt2.json").exists()


def test_an_injected_hang_is_killed_at_task_timeout_counted_and_retried(tmp_path):
    from surgesim.live.job_faults import TaskFaults

    # the task works 1.5 s, so the hang 0.1 s in stops it well before it could finish, even
    # on a loaded machine (with 0.3 s of work a CI run saw the first attempt finish first)
    job, out = _job(tmp_path, sleep=1.5, tasks=1, max_retries=1, task_timeout=3.0)
    faults = TaskFaults()
    faults.start(_fault("job_task_hang", count=1, after="0.1s"), {})
    ex = Execution(job, tmp_path / "run", on_attempt=faults.on_attempt)
    t0 = time.monotonic()
    rec = ex.run()
    assert time.monotonic() - t0 < 15
    hung, ok = rec["tasks"][0]["attempts"]
    assert hung["fault"] == "job_task_hang" and hung["timed_out"] and 3.0 <= hung["duration_s"] < 5.0
    assert hung["exit_code"] == -15  # continued, then ended by the timeout's TERM (no 5 s wait for KILL)
    assert not ok["timed_out"] and ok["exit_code"] == 0 and rec["state"] == "succeeded"
    assert not (out / "task0-attempt0.json").exists()
    totals = summary([ex])["backfill"]
    assert totals["timeouts"] == 1 and totals["crashes"] == 0 and totals["retries"] == 1
