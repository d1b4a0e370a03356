"""The BigQuery job clock's pure parts (emulators/bq_jobs.py, surgesim/live/job_clock.py);
tests/integration/test_live_relay.py runs it against the real emulator."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from surgesim.emulators.bq_jobs import JobClock, JobTable, as_running
from surgesim.live.job_clock import job_durations
from surgesim.schema import load_system

ROOT = Path(__file__).resolve().parents[2]


def test_a_running_job_has_no_outcome_yet():
    done = {"jobReference": {"jobId": "j1", "location": "US"},
            "status": {"state": "DONE", "errorResult": {"reason": "notFound"}, "errors": [{"reason": "notFound"}]},
            "statistics": {"creationTime": "1", "startTime": "2", "endTime": "3", "query": {"numDmlAffectedRows": "1"}}}
    job = as_running(done)
    assert job["status"] == {"state": "RUNNING"}  # a failure is not known before the job ends
    assert job["statistics"] == {"creationTime": "1", "startTime": "2"}
    assert job["jobReference"] == done["jobReference"] and done["status"]["state"] == "DONE"  # a copy


def test_a_job_is_running_until_its_time_and_unknown_jobs_are_not():
    table = JobTable()
    table.done_at["soon"] = time.monotonic() + 60
    table.done_at["past"] = time.monotonic() - 1
    assert table.running("soon") and not table.running("past") and not table.running("never-seen")
    assert table.running_count() == 1  # what the drain waits for


def test_run_times_follow_the_step_on_the_scenario_clock():
    clock = JobClock("http://127.0.0.1:1", JobTable(), p50=180.0, p99=1500.0, time_scale=30.0, seed=3)
    draws = [clock.run_time() for _ in range(4000)]
    assert abs(statistics.median(draws) - 6.0) < 0.4  # 3 min / 30
    assert abs(sorted(draws)[int(0.99 * len(draws))] - 50.0) < 12.0  # 25 min / 30
    assert JobClock("http://127.0.0.1:1", JobTable()).run_time() == 0.0  # a service without a job step


def test_the_relays_job_step_is_found():
    relay = load_system(ROOT / "scenarios" / "systems" / "relay.yaml")
    assert job_durations(relay) == {"relay-start": (180.0, 1500.0)}


def test_a_failed_job_is_done_with_its_error_as_bigquery_shows_it():
    from surgesim.emulators.bq_jobs import as_failed, error_body

    ok = {"jobReference": {"jobId": "j1"}, "status": {"state": "DONE"}}
    err = {"reason": "backendError", "message": "boom"}
    job = as_failed(ok, err)
    assert job["status"] == {"state": "DONE", "errorResult": err, "errors": [err]} and ok["status"] == {"state": "DONE"}
    import json

    assert json.loads(error_body(err))["error"]["errors"][0]["reason"] == "backendError"


def test_a_failure_window_fails_jobs_of_its_service_at_its_rate():
    from surgesim.emulators.bq_jobs import Failing

    table = JobTable()
    start = JobClock("http://127.0.0.1:1", table, seed=1, service="relay-start")
    other = JobClock("http://127.0.0.1:1", table, seed=1, service="relay-status")
    assert start._fails() is None  # no window open
    table.failing = Failing(rate=0.3, service="relay-start")
    draws = [start._fails() for _ in range(4000)]
    assert abs(sum(d is not None for d in draws) / 4000 - 0.3) < 0.03
    assert {d["reason"] for d in draws if d} == {"backendError"}
    assert all(other._fails() is None for _ in range(200))  # another service's jobs are not its target
    table.failing = Failing()  # no target, rate 1: every job of every service
    assert other._fails() is not None and start._fails() is not None
