"""bigquery_job_slow in the simulator (sim/faults.py, sim/handler.py's bigquery job step), at
validation, and its live half's pure parts (surgesim/live/fault_kinds.py, emulators/bq_jobs.py):
jobs inserted in the window run `latency` longer, so they are polled that many more times;
jobs inserted outside it are untouched; the `bigquery_job.SERVICE` SLO sees the run time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import surgesim.sim.handler as handler
from surgesim.schema import load_experiment
from surgesim.schema.loading import SchemaError
from surgesim.sim.engine import Engine

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = f"""\
name: s
system: {ROOT}/scenarios/systems/relay.yaml
plan: {ROOT}/scenarios/plans/relay.yaml
duration: 40m
traffic:
  sources:
    - {{name: req, rate: 60/m, publish: {{topic: relay.requests, attributes: {{jobKind: rollup}}}}}}
slos:
  - final(dlq.relay-status-sub) == 0
faults:
FAULTS
"""
SLOW = "  - {kind: bigquery_job_slow, target: relay-start, at: 2m, duration: 3m, latency: 20m}"


def run(tmp_path: Path, faults: str, monkeypatch=None) -> tuple[Engine, list[tuple[np.ndarray, np.ndarray]]]:
    """The engine after the run, and each job batch's (insert times, added run time)."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    if monkeypatch is not None:
        real = handler.job_delays

        def spy(h, inserted):
            extra = real(h, inserted)
            seen.append((inserted.copy(), np.zeros(inserted.size) if extra is None else extra.copy()))
            return extra

        monkeypatch.setattr(handler, "job_delays", spy)
    (tmp_path / "s.yaml").write_text(SCENARIO.replace("FAULTS", faults))
    eng = Engine(load_experiment(tmp_path / "s.yaml"))
    eng.run()
    return eng, seen


def test_jobs_inserted_in_the_window_run_longer_and_the_others_do_not(tmp_path, monkeypatch):
    base, _ = run(tmp_path, "  []")
    slow, seen = run(tmp_path, SLOW, monkeypatch)
    inserted = np.concatenate([s[0] for s in seen])
    added = np.concatenate([s[1] for s in seen])
    inside = (inserted >= 120) & (inserted < 300)
    n_in = int(inside.sum())
    assert 0.85 * 180 <= n_in <= 1.15 * 180, n_in  # 60 jobs a minute for the window's 3 minutes
    assert (added[inside] == 1200.0).all() and (added[~inside] == 0.0).all()

    # the run time histogram: every job's draw as without the fault (a random stream of its
    # own), plus exactly the window's 20 minutes per job inserted in it
    run_base, run_slow = (e.metrics.totals["bigquery_job/relay-start"] for e in (base, slow))
    assert run_slow.count == run_base.count == inserted.size
    assert run_slow.total - run_base.total == pytest.approx(1200.0 * n_in, rel=1e-9)

    # a status check a minute: each slowed job is polled 20 more times (fewer for the few whose
    # draw is long enough for their checks to fall after the run's end), nothing else changes
    t_base, t_slow = base.totals(), slow.totals()
    checks = t_slow["topics"]["relay.status"]["published"] - t_base["topics"]["relay.status"]["published"]
    assert 0.9 * 20 * n_in <= checks <= 20 * n_in, (checks, n_in)
    assert t_slow["topics"]["relay.requests"] == t_base["topics"]["relay.requests"]
    assert t_slow["subscriptions"]["relay-start-sub"] == t_base["subscriptions"]["relay-start-sub"]
    assert t_slow["subscriptions"]["relay-status-sub"]["dead_lettered"] == 0  # slow is not failed


def test_a_window_slows_only_its_target_services_jobs_inside_it():
    from surgesim.schema import Fault
    from surgesim.sim.core import rng_for
    from surgesim.sim.faults import job_delays

    f = Fault.model_validate({"kind": "bigquery_job_slow", "target": "relay-start", "at": 60, "duration": 60,
                              "latency": "5m"})
    eng = SimpleNamespace(job_slowdowns=[(f, rng_for(1, "x"))])
    inserted = np.array([59.9, 60.0, 119.9, 120.0])
    assert job_delays(SimpleNamespace(owner="relay-start", eng=eng), inserted).tolist() == [0.0, 300.0, 300.0, 0.0]
    assert job_delays(SimpleNamespace(owner="relay-status", eng=eng), inserted) is None


def test_the_scenario_fails_its_job_run_time_slo_in_the_simulator(tmp_path):
    out = tmp_path / "run"
    rc = subprocess.run([sys.executable, "-m", "surgesim.cli", "sim", str(ROOT / "scenarios" / "relay_jobs_slow.yaml"),
                         "--out", str(out), "--no-report"], capture_output=True, text=True)
    assert rc.returncode == 1, rc.stdout[-3000:] + rc.stderr[-3000:]
    import json

    slos = {s["text"]: s for s in json.loads((out / "summary.json").read_text())["slos"]}
    assert [t for t, s in slos.items() if not s["holds"]] == ["p90(bigquery_job.relay-start) < 30m"]
    assert slos["p90(bigquery_job.relay-start) < 30m"]["observed"] > 1800.0
    faults = json.loads((out / "faults.json").read_text())
    record = next(r for r in faults if r["kind"] == "bigquery_job_slow")
    assert (record["start_s"], record["end_s"]) == (2700.0, 3900.0) and record["details"]["latency"]["p50"] == 1800.0


def test_latency_is_required(tmp_path):
    (tmp_path / "s.yaml").write_text(SCENARIO.replace("FAULTS", "  - {kind: bigquery_job_slow, at: 1m, duration: 1m}"))
    with pytest.raises(SchemaError, match=r"faults\[0\].*bigquery_job_slow needs latency"):
        load_experiment(tmp_path / "s.yaml")


def test_a_system_without_a_bigquery_job_step_refuses_it(tmp_path):
    (tmp_path / "system.yaml").write_text("name: plain\ntopics: [{name: tasks}]\n"
                                          "services:\n  - name: w\n    steps: [{cpu: {p50: 1ms}}]\n")
    (tmp_path / "s.yaml").write_text("name: s\nsystem: system.yaml\nduration: 10m\ntraffic: {sources: [{name: a, rate: 1/s, publish: {topic: tasks}}]}\n"
                                     "faults:\n  - {kind: bigquery_job_slow, at: 1m, duration: 1m, latency: 5m}\n")
    with pytest.raises(SchemaError, match=r"faults\[0\]\.kind: bigquery_job_slow: .*no service with a "
                                          r"`bigquery: \{op: job\}` step, so there is no BigQuery job to slow down"):
        load_experiment(tmp_path / "s.yaml")


def test_a_target_without_a_job_step_is_refused_by_its_field(tmp_path):
    (tmp_path / "s.yaml").write_text(SCENARIO.replace(
        "FAULTS", "  - {kind: bigquery_job_slow, target: relay-status, at: 1m, latency: 5m}"))
    with pytest.raises(SchemaError, match=r"faults\[0\]\.target: 'relay-status' is not a service .* with a "
                                          r"`bigquery: \{op: job\}` step \(those are: relay-start\)"):
        load_experiment(tmp_path / "s.yaml")


def test_a_job_run_time_slo_names_a_service_with_a_job_step(tmp_path):
    (tmp_path / "s.yaml").write_text(SCENARIO.replace("FAULTS", "  []").replace(
        "  - final(dlq.relay-status-sub) == 0", "  - p90(bigquery_job.relay-status) < 30m"))
    with pytest.raises(SchemaError, match=r"slos\[0\].*bigquery_job\.relay-status: no such service with a "
                                          r"`bigquery: \{op: job\}` step"):
        load_experiment(tmp_path / "s.yaml")


def test_live_it_is_refused_without_a_job_clock_and_opens_and_closes_the_slow_window():
    from surgesim.emulators.bq_jobs import JobClock, JobTable
    from surgesim.live.fault_kinds import fault_kind
    from surgesim.schema import Fault, load_system

    relay = load_system(ROOT / "scenarios" / "systems" / "relay.yaml")
    f = Fault.model_validate({"kind": "bigquery_job_slow", "at": 0, "duration": 60, "latency": "30m",
                              "target": "relay-start"})
    kind = fault_kind(f)
    assert kind.refused(f, relay) is None
    no_clock = SimpleNamespace(job_table=None, procs={"relay-start": object()}, skipped={})
    assert "cannot be made to slow down" in kind.refused_here(f, no_clock)
    table = JobTable()
    start = JobClock("http://127.0.0.1:1", table, time_scale=30.0, service="relay-start")
    other = JobClock("http://127.0.0.1:1", table, time_scale=30.0, service="relay-status")
    runner = SimpleNamespace(job_table=table, procs={"relay-start": object()}, skipped={})
    assert kind.refused_here(f, runner) is None
    a, inj = SimpleNamespace(fault=f, restore={}), SimpleNamespace(runner=runner, time_scale=30.0)
    assert start._slowdown() == 0.0  # no window open
    kind.start(inj, a, 0.0)
    # 30 scenario minutes on the job clock's scale, as the step's own run time: 60 wall s at x30
    assert start._slowdown() == 60.0 and other._slowdown() == 0.0
    table.inserted, table.slowed, table.added_s = 3, 2, 120.0  # what two slowed inserts leave
    details: dict = {}
    kind.end(inj, a, details)
    assert table.slow is None and start._slowdown() == 0.0
    assert details["jobs_inserted"] == 3 and details["jobs_slowed"] == 2 and details["added_s_mean"] == 1800.0
    assert "failed" not in details
    kind.start(inj, a, 0.0)
    details = {}
    kind.end(inj, a, details)  # nothing inserted in this window: the run did not rehearse it
    assert details["jobs_slowed"] == 0 and details["failed"].startswith("no BigQuery job was inserted")


def test_a_slow_window_draws_from_its_own_stream():
    """The run times drawn for jobs, inside or outside a slow window, are those of a run without it."""
    from surgesim.emulators.bq_jobs import JobClock, JobTable, Slow

    plain, slowed = JobTable(), JobTable()
    a = JobClock("http://127.0.0.1:1", plain, p50=180.0, p99=1500.0, time_scale=30.0, seed=5)
    b = JobClock("http://127.0.0.1:1", slowed, p50=180.0, p99=1500.0, time_scale=30.0, seed=5)
    slowed.slow = Slow(p50=600.0, p99=1200.0)
    draws = []
    for _ in range(200):
        draws.append((a.run_time(), b.run_time(), b._slowdown()))
    assert all(x == y for x, y, _ in draws)
    added = sorted(d[2] for d in draws)
    assert added[0] > 0 and abs(added[100] - 20.0) < 3.0  # p50 10 min / 30
