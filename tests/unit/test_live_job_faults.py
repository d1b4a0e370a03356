"""FaultInjector's bookkeeping for job faults (the attempts themselves are killed for real in
tests/integration/test_live_jobs.py and test_live_jobs_run.py): unsupported targets are
refused before the run, and a fault that hit no attempt is recorded failed."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

from surgesim.checks import fault_checks
from surgesim.live.faults import FaultInjector
from surgesim.schema.scenario import Fault
from surgesim.schema.system import Job


def injector(faults):
    runner = SimpleNamespace(
        stack=SimpleNamespace(endpoint=lambda name: "127.0.0.1:1"),
        system=SimpleNamespace(project="p", jobs=[Job(name="embed", command=["true"]), Job(name="modelled")]),
        fake_procs={}, procs={}, skipped={})
    return FaultInjector(runner, faults, 10.0, say=lambda m: None)


def fault(**kw):
    return Fault.model_validate({"kind": "job_task_crash", "at": 0, "target": "embed", **kw})


def test_a_job_without_command_or_not_a_job_cannot_be_faulted_live():
    inj = injector([fault(target="modelled"), fault(target="nope"), fault()])
    problems = inj.unsupported()
    assert problems == ["job_task_crash of modelled at 0s: job modelled has no command: its tasks do not run live",
                        "job_task_crash of nope at 0s: 'nope' is not a job of this system"]


def test_a_fault_that_hit_nothing_is_recorded_failed_and_one_that_hit_is_not():
    missed, hit = fault(duration=5), fault(kind="job_task_hang", duration=5)
    inj = injector([missed, hit])
    inj.tick(0.0)
    assert not inj.holding()  # armed job faults do not hold the drain
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        # the crash fault is first in line for job embed: make it the one that misses
        inj.tasks.end(missed)
        assert inj.tasks.on_attempt("embed", "embed-x", 0, 0, proc) == "job_task_hang"
    finally:
        proc.kill()
        proc.wait()
    inj.finish(10.0)
    by_kind = {e["kind"]: e for e in inj.events}
    assert by_kind["job_task_crash"]["details"]["failed"].startswith("no task attempt of job embed started")
    assert by_kind["job_task_hang"]["details"]["attempts"] == [{"execution": "embed-x", "task": 0, "attempt": 0,
                                                                "pid": proc.pid}]
    assert "failed" not in by_kind["job_task_hang"]["details"]
    [check] = fault_checks({}, SimpleNamespace(faults=[missed, hit]), inj.events)
    assert not check["holds"] and "no task attempt of job embed" in check["detail"]
