"""Workflow and job executions in a run's summary, its verdict and its report: the records
summary (surgesim/workflows/records.py), the implicit `workflows` / `jobs` checks
(surgesim/checks.py) and their relaxation, the report's tables and the jobs Gantt plot."""

from __future__ import annotations

import json
import re

import pytest

from surgesim.checks import final_verdict, implicit_checks, job_checks, workflow_checks
from surgesim.reports import build_report
from surgesim.reports.plots import attempt_outcome
from surgesim.schema.scenario import Checks
from surgesim.workflows.records import read_records, summarise, workflow_totals
from tests.unit.test_report import assert_real_png, minimal_run


def record(i: int, state: str, duration: float, result=None, retries: int = 0, error=None) -> dict:
    steps = [{"step": "main.steps.go", "duration_s": 0.1, "state": "succeeded"}]
    steps += [{"step": "main.steps.call.retry", "attempt": k + 1, "delay_s": 1.0, "error": {"code": 503}}
              for k in range(retries)]
    return {"execution_id": f"e{i}", "workflow": "saga", "state": state, "argument": {}, "result": result,
            "error": error, "started_at": 1.0e9 + i, "duration_s": duration, "steps": steps}


def saga_records() -> list[dict]:
    recs = [record(i, "SUCCEEDED", 1.0 + i * 0.01, {"state": "succeeded"}) for i in range(97)]
    recs.append(record(97, "SUCCEEDED", 10.0, {"state": "compensated"}, retries=2))
    recs += [record(98 + i, "FAILED", 20.0 + i, error={"message": "release refused", "code": 500}) for i in range(2)]
    return recs


def test_summary_counts_states_outcomes_retries_and_duration_percentiles(tmp_path):
    path = tmp_path / "saga.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in saga_records()) + "\n{\"cut short")
    recs = read_records(path)
    assert len(recs) == 100  # the half-written last line is skipped
    s = summarise(recs, path)
    assert s["executions"] == 100 and s["states"] == {"FAILED": 2, "SUCCEEDED": 98}
    assert s["succeeded"] == 98 and s["failed"] == 2
    assert s["outcomes"] == {"compensated": 1, "succeeded": 97}
    assert s["retries"] == 2
    assert s["duration_s"]["p50"] == pytest.approx(1.495, abs=0.01)
    assert 10.0 < s["duration_s"]["p99"] <= 21.0 and s["duration_s"]["max"] == 21.0
    assert [e["execution_id"] for e in s["failed_examples"]] == ["e98", "e99"]
    assert "release refused" in s["failed_examples"][0]["error"]
    # a workflow that never ran has a file that does not exist: zero executions, no durations
    assert workflow_totals({"idle": tmp_path / "none.jsonl"})["idle"] == {
        "executions": 0, "states": {}, "succeeded": 0, "failed": 0, "outcomes": {}, "retries": 0,
        "duration_s": None, "records": str(tmp_path / "none.jsonl")}


class Sc:
    def __init__(self, checks=None):
        self.checks = checks or Checks()
        self.faults = []


def test_failed_executions_fail_the_verdict_unless_relaxed_with_a_reason():
    summary = {"mode": "live", "totals": {"workflows": {"saga": summarise(saga_records())}}}
    [check] = workflow_checks(summary, Sc())
    assert check["name"] == "workflows.saga" and not check["holds"] and check["observed"] == 2.0
    assert "2 of 100 executions failed" in check["detail"] and "release refused" in check["detail"]
    assert final_verdict([], [check]) == "fail"

    relaxed = Sc(Checks.model_validate({"workflows": {"allow": {"saga": 2}, "reason": "the release fake refuses"}}))
    [ok] = workflow_checks(summary, relaxed)
    assert ok["holds"] and ok["reason"] == "the release fake refuses" and ok["text"] == "failed(workflow saga) <= 2"
    tight = Sc(Checks.model_validate({"workflows": {"allow": {"saga": 1}, "reason": "one may fail"}}))
    assert not workflow_checks(summary, tight)[0]["holds"]

    # the simulator's saga counts are judged the same way
    sim = {"totals": {"workflows": {"saga": {"started": 10, "succeeded": 8, "compensated": 2, "failed": 0}}}}
    assert workflow_checks(sim, Sc())[0]["holds"]
    sim["totals"]["workflows"]["saga"]["failed"] = 1
    assert not workflow_checks(sim, Sc())[0]["holds"]


def test_failed_job_executions_are_an_implicit_check_live_only():
    live = {"totals": {"jobs": {"embed": {"executions": 2, "failed_executions": 1, "tasks_failed": 1}}}}
    [check] = job_checks(live, Sc())
    assert check["name"] == "jobs.embed" and not check["holds"] and "1 of 2 executions failed" in check["detail"]
    names = [c["name"] for c in implicit_checks(live, Sc(), None)]
    assert "jobs.embed" in names
    relaxed = Sc(Checks.model_validate({"jobs": {"allow": {"embed": 1}, "reason": "a crash fault past max_retries"}}))
    assert job_checks(live, relaxed)[0]["holds"]
    # the simulator counts failed attempts, not executions: nothing to judge
    assert job_checks({"totals": {"jobs": {"embed": {"tasks_run": 5, "tasks_failed": 3}}}}, Sc()) == []


def job_execution(name: str, attempts_per_task: list[list[dict]], state: str) -> dict:
    t = 1.0e9
    tasks = []
    for i, attempts in enumerate(attempts_per_task):
        out = []
        for k, a in enumerate(attempts):
            out.append({"attempt": k, "start": t, "end": t + a.get("d", 1.0), "duration_s": a.get("d", 1.0),
                        "exit_code": a["code"], "timed_out": a.get("timed_out", False)})
            t += a.get("d", 1.0)
        tasks.append({"index": i, "state": "succeeded" if out[-1]["exit_code"] == 0 else "failed", "attempts": out})
    return {"job": "embed", "execution": name, "state": state, "task_count": len(tasks), "parallelism": 2,
            "succeeded": sum(t["state"] == "succeeded" for t in tasks),
            "failed": sum(t["state"] == "failed" for t in tasks),
            "retries": sum(len(t["attempts"]) - 1 for t in tasks), "start": 1.0e9, "end": t, "duration_s": t - 1.0e9,
            "tasks": tasks}


def test_report_shows_workflow_executions_and_a_gantt_of_job_tasks(tmp_path):
    crashy = job_execution("embed-abcde", [[{"code": 0}], [{"code": 3}, {"code": 3}, {"code": 0}],
                                           [{"code": -15, "timed_out": True, "d": 5.0}, {"code": 0}]], "succeeded")
    run = minimal_run(tmp_path / "run", totals={"workflows": {"saga": summarise(saga_records())}})
    (run / "jobs").mkdir()
    (run / "jobs" / "embed-abcde.json").write_text(json.dumps(crashy))
    (run / "jobs" / "embed-abcde-task1-attempt0.log").write_text("crash\n")  # logs beside the records are not records
    page = build_report(run).read_text()
    assert "Workflow executions" in page and "compensated 1, succeeded 97" in page
    row = re.search(r"<td class=\"l\">embed-abcde</td>.*?</tr>", page, re.S).group(0)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    # state, tasks, succeeded, failed, attempts, retries, crashed, timed out
    assert cells[1:9] == ["succeeded", "3", "3", "0", "6", "3", "2", "1"]
    assert "plots/job_tasks.png" in page
    assert_real_png(run / "plots" / "job_tasks.png")
    assert [attempt_outcome(a) for t in crashy["tasks"] for a in t["attempts"]] == [
        "succeeded", "crashed", "crashed", "succeeded", "timed out", "succeeded"]


def test_report_without_jobs_or_workflows_has_neither_section(tmp_path):
    page = build_report(minimal_run(tmp_path / "plain")).read_text()
    assert "Workflow executions" not in page and "Job executions" not in page and "job_tasks" not in page
