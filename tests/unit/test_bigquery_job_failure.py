"""bigquery_job_failure in the simulator (sim/faults.py, sim/handler.py's bigquery job and
poll steps) and at validation: jobs inserted in the window fail with the fault's error rate,
the check that finds each failed job is failed by its consumer, retried and dead-lettered,
so the relay's SLOs fail; a system without a BigQuery job step refuses the fault."""

from __future__ import annotations

from pathlib import Path

import subprocess
import sys

import pytest

from surgesim.schema import load_experiment
from surgesim.schema.loading import SchemaError
from surgesim.sim.engine import Engine

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = f"""\
name: s
system: {ROOT}/scenarios/systems/relay.yaml
plan: {ROOT}/scenarios/plans/relay.yaml
duration: 1h
traffic:
  sources:
    - {{name: req, rate: 60/m, publish: {{topic: relay.requests, attributes: {{jobKind: rollup}}}}}}
slos:
  - final(dlq.relay-status-sub) == 0
faults:
FAULTS
"""


def run(tmp_path: Path, faults: str) -> dict:
    (tmp_path / "s.yaml").write_text(SCENARIO.replace("FAULTS", faults))
    eng = Engine(load_experiment(tmp_path / "s.yaml"))
    eng.run()
    return eng.totals()


def test_without_the_fault_no_job_fails(tmp_path):
    t = run(tmp_path, "  []")
    assert t["subscriptions"]["relay-status-sub"]["dead_lettered"] == 0
    assert t["subscriptions"]["relay-start-sub"]["dead_lettered"] == 0


@pytest.mark.parametrize("fault, rate", [
    ("{kind: bigquery_job_failure, target: relay-start, at: 10m, duration: 5m}", 1.0),  # the default rate
    ("{kind: bigquery_job_failure, at: 10m, duration: 5m, error_rate: 0.5}", 0.5),
])
def test_jobs_inserted_in_the_window_fail_at_the_rate_and_are_dead_lettered(tmp_path, fault, rate):
    t = run(tmp_path, f"  - {fault}")
    requests = t["topics"]["relay.requests"]["published"]
    expected = requests * (5 / 60) * rate  # a steady source: the window's share of the jobs
    status = t["subscriptions"]["relay-status-sub"]
    assert 0.85 * expected <= status["dead_lettered"] <= 1.15 * expected, (status, expected)
    # each failed job's last check was delivered max_attempts (10) times, then dead-lettered
    assert status["dead_letter_attempts"] == {"min": 10, "max": 10}
    assert t["subscriptions"]["relay-start-sub"]["dead_lettered"] == 0  # the insert itself succeeded


def test_the_scenario_fails_its_slo_in_the_simulator(tmp_path):
    out = tmp_path / "run"
    rc = subprocess.run([sys.executable, "-m", "surgesim.cli", "sim", str(ROOT / "scenarios" / "relay_job_failures.yaml"),
                         "--out", str(out), "--no-report"], capture_output=True, text=True)
    assert rc.returncode == 1, rc.stdout[-3000:] + rc.stderr[-3000:]
    assert "final(dlq.relay-status-sub) == 0" in rc.stdout and "FAILS" in rc.stdout


def test_a_system_without_a_bigquery_job_step_refuses_it(tmp_path):
    (tmp_path / "system.yaml").write_text("name: plain\ntopics: [{name: tasks}]\n"
                                          "services:\n  - name: w\n    steps: [{cpu: {p50: 1ms}}]\n")
    (tmp_path / "s.yaml").write_text("name: s\nsystem: system.yaml\nduration: 10m\ntraffic: {sources: [{name: a, rate: 1/s, publish: {topic: tasks}}]}\n"
                                     "faults:\n  - {kind: bigquery_job_failure, at: 1m, duration: 1m}\n")
    with pytest.raises(SchemaError, match=r"faults\[0\]\.kind.*no service with a `bigquery: \{op: job\}` step"):
        load_experiment(tmp_path / "s.yaml")


def test_a_target_without_a_job_step_is_refused_with_the_ones_that_have_one(tmp_path):
    (tmp_path / "s.yaml").write_text(SCENARIO.replace("FAULTS", "  - {kind: bigquery_job_failure, target: relay-status, at: 1m}"))
    with pytest.raises(SchemaError, match=r"'relay-status' is not a service .* with a `bigquery: \{op: job\}` step \(those are: relay-start\)"):
        load_experiment(tmp_path / "s.yaml")


def test_live_it_is_refused_without_a_job_clock_and_arms_and_disarms_the_clock():
    from types import SimpleNamespace

    from surgesim.emulators.bq_jobs import JobTable
    from surgesim.live.fault_kinds import fault_kind
    from surgesim.schema import Fault, load_system

    relay = load_system(ROOT / "scenarios" / "systems" / "relay.yaml")
    f = Fault.model_validate({"kind": "bigquery_job_failure", "at": 0, "duration": 60, "error_rate": 0.25,
                              "target": "relay-start"})
    kind = fault_kind(f)
    assert kind.refused(f, relay) is None
    wrong = f.model_copy(update={"target": "relay-status"})
    assert "'relay-status' is not a service with a `bigquery: {op: job}` step (relay-start)" == kind.refused(wrong, relay)
    no_clock = SimpleNamespace(job_table=None, procs={"relay-start": object()}, skipped={})
    assert "no BigQuery job clock" in kind.refused_here(f, no_clock)
    table = JobTable()
    runner = SimpleNamespace(job_table=table, procs={"relay-start": object()}, skipped={})
    assert kind.refused_here(f, runner) is None
    a = SimpleNamespace(fault=f, restore={})
    inj = SimpleNamespace(runner=runner)
    kind.start(inj, a, 0.0)
    assert table.failing.rate == 0.25 and table.failing.service == "relay-start"
    table.inserted += 4
    table.failed["j1"] = {"reason": "backendError", "message": "x"}
    details: dict = {}
    kind.end(inj, a, details)
    assert table.failing is None and details["jobs_inserted"] == 4 and details["jobs_failed"] == 1
    assert "failed" not in details
    kind.start(inj, a, 0.0)
    details = {}
    kind.end(inj, a, details)  # nothing failed in this window: the run did not rehearse it
    assert details["jobs_failed"] == 0 and details["failed"].startswith("no BigQuery job was made to fail")
