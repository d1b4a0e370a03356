"""SLO evaluation on tiny run directories written with RunWriter (no summary.json yet)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from surgesim.histogram import Histogram
from surgesim.rundir import METRICS, Run, RunWriter, histogram_rows
from surgesim.schema.scenario import Scenario
from surgesim.slo import drain_time, evaluate, junit_xml, verdict


def scenario(slos, waves=(), faults=()):
    return Scenario.model_validate({
        "name": "t", "system": "x.yaml", "duration": "100s",
        "traffic": {"sources": [{"name": "a", "rate": 1, "publish": {"topic": "tt1"}}], "waves": list(waves)},
        "faults": list(faults), "slos": slos})


def rows(metric, entity, values, step=10.0):
    return pd.DataFrame({"time_s": np.arange(len(values)) * step, "metric": METRICS[metric],
                         "entity": entity, "value": np.asarray(values, dtype=float)})


@pytest.fixture
def run(tmp_path):
    w = RunWriter(tmp_path / "r")
    backlog = [0, 0, 0, 500, 2000, 3000, 1500, 400, 5, 0]   # windows end at 10, 20, ... 100
    w.write_timeseries(pd.concat([
        rows("backlog", "sub-a", backlog),
        rows("oldest_unacked", "sub-a", [0, 0, 0, 5, 20, 40, 30, 10, 1, 0]),
        rows("dead_lettered", "sub-a", [0, 0, 0, 0, 2, 1, 0, 0, 0, 0]),
        rows("instances", "svc", [1, 1, 2, 4, 8, 8, 6, 4, 2, 2]),
        rows("rejected", "svc", [0, 0, 0, 3, 7, 0, 0, 0, 0, 0]),
    ]))
    fast, slow = Histogram(), Histogram()
    fast.record(np.full(990, 0.010))
    fast.record(np.full(10, 0.500))
    slow.record(np.full(100, 0.200))
    w.write_histograms(pd.concat([histogram_rows(0.0, "latency/svc.fast", fast),
                                  histogram_rows(10.0, "latency/svc.slow", slow),
                                  histogram_rows(0.0, "lag/sub-a", fast)]))
    w.write_faults([{"kind": "wave", "target": "a", "start_s": 25.0, "end_s": 60.0, "details": {}}])
    return Run(w.dir)


def test_latency_percentiles_from_histograms(run):
    sc = scenario(["p99(latency.svc.fast) < 20ms", "p999(latency.svc.fast) < 20ms",
                   "p50(lag.sub-a) <= 11ms", "max(latency.svc) < 600ms", "p95(latency.svc) < 100ms"])
    res = evaluate(run, sc)
    assert [r["holds"] for r in res] == [True, False, True, True, False]
    assert res[0]["observed"] == pytest.approx(0.010, rel=0.01)
    assert res[1]["observed"] == pytest.approx(0.500, rel=0.01)
    # latency.svc merges both routes: 1,100 samples, the top 5% include the 200 ms ones.
    assert res[4]["observed"] == pytest.approx(0.200, rel=0.01)
    assert not (run.dir / "summary.json").exists()


def test_gauges_counts_and_dlq(run):
    sc = scenario(["max(backlog.sub-a) < 5000", "final(backlog.sub-a) == 0", "max(oldest_unacked.sub-a) < 30s",
                   "final(dlq.sub-a) == 0", "max(dlq.sub-a) <= 3", "max(instances.svc) <= 8",
                   "total(rejected.svc) == 10", "max(rejected.svc) == 0", "mean(instances.svc) > 3"])
    res = evaluate(run, sc)
    observed = [r["observed"] for r in res]
    assert observed == [3000, 0, 40, 3, 3, 8, 10, 10, 3.8]
    assert [r["holds"] for r in res] == [True, True, False, False, True, True, True, False, True]
    assert verdict(res) == "fail"
    assert verdict([r for r in res if r["holds"]]) == "pass"


def test_no_events_counts_as_zero_but_no_samples_fails(run):
    res = evaluate(run, scenario(["final(dlq.sub-b) == 0", "p99(latency.other) < 1s", "max(backlog.sub-b) < 10"]))
    assert res[0] == {"text": "final(dlq.sub-b) == 0", "observed": 0.0, "holds": True}
    assert res[1]["observed"] is None and not res[1]["holds"]
    assert res[2]["observed"] is None and not res[2]["holds"]


def test_drain_from_the_rise_to_the_return(run):
    # The wave runs 25..60 s. Settle level: max(pre 0, 1% of 3000 = 30, 10) = 30. The backlog
    # rises past 30 between 30 s (0) and 40 s (500), at 30 + 10 * 30/500, and is back below
    # between 80 s (400) and 90 s (5), at 80 + 10 * 370/395: the time it was up.
    res = evaluate(run, scenario(["drain(backlog.sub-a) < 60s", "drain(backlog.sub-a) < 50s"]))
    expect = (80 + 10 * 370 / 395) - (30 + 10 * 30 / 500)
    assert res[0]["observed"] == pytest.approx(expect)
    assert [r["holds"] for r in res] == [True, False]


def test_drain_is_the_time_it_took_even_when_the_fault_outlasted_it(tmp_path):
    # The fault runs 10..90 s; the backlog is up from ~20 s to ~50 s and back to 0 long before
    # the fault ends. The old definition (from the fault's end) said 0; it took ~30 s.
    w = RunWriter(tmp_path / "r")
    w.write_timeseries(rows("backlog", "s", [0, 0, 1000, 2000, 1000, 0, 0, 0, 0, 0]))
    w.write_faults([{"kind": "dependency_latency", "target": "api", "start_s": 10.0, "end_s": 90.0, "details": {}}])
    res = evaluate(Run(w.dir), scenario(["drain(backlog.s) < 1m", "drain(backlog.s) < 30s"]))
    # settle = max(0, 20, 10) = 20: up at 20 + 10 * 20/1000, back at 50 + 10 * 980/1000
    assert res[0]["observed"] == pytest.approx((50 + 9.8) - (20 + 0.2))
    assert [r["holds"] for r in res] == [True, False]


def test_drain_takes_the_longest_of_several_excursions():
    t = np.arange(10) * 10.0
    # up 20..30 (short) and 50..90 (long) after a wave from 5 s; settle 10 (the floor)
    v = np.array([0, 0, 100, 0, 0, 100, 100, 100, 100, 0.0])
    got = drain_time(t, v, 10.0, [(5.0, 15.0)])
    assert got == pytest.approx((90 + 9) - (50 + 1))


def test_drain_never_returning_is_infinite_and_fails(tmp_path):
    w = RunWriter(tmp_path / "r")
    w.write_timeseries(rows("backlog", "s", [0, 100, 800, 2000, 4000, 6000]))
    w.write_faults([{"kind": "consumer_down", "target": "svc", "start_s": 10.0, "end_s": 30.0, "details": {}}])
    res = evaluate(Run(w.dir), scenario(["drain(backlog.s) < 1h"]))
    assert res == [{"text": "drain(backlog.s) < 1h", "observed": None, "holds": False}]
    xml = junit_xml(res, "drain")
    assert "observed inf, required &lt; 3600s" in xml


def test_drain_uses_the_pre_fault_level_and_the_scenario_when_faults_json_is_absent(tmp_path):
    w = RunWriter(tmp_path / "r")
    # A standing backlog of 500 before the wave (windows of 10 s; the wave is 20 s..40 s).
    w.write_timeseries(rows("backlog", "s", [500, 500, 900, 1200, 800, 450, 400]))
    sc = scenario(["drain(backlog.s) < 1m"], waves=[{"name": "w", "at": "20s", "duration": "20s", "rates": {"a": 5}}])
    res = evaluate(Run(w.dir), sc)
    # Settle at 500 (before the wave at 20 s): up between 20 s (500) and 30 s (900) at
    # 20 + 10 * 0/400 = 20 s; back between 50 s (800) and 60 s (450) at 50 + 10*300/350.
    assert res[0]["observed"] == pytest.approx(50 + 10 * 300 / 350 - 20)


def test_drain_time_edge_cases():
    t = np.arange(5) * 10.0
    # No fault or wave: from the run's start at level 0; settle max(0, 1% of 50, 10) = 10.
    assert drain_time(t, np.array([0, 50, 5, 0, 0.0]), 10.0, []) == pytest.approx((20 + 10 * 40 / 45) - (10 + 2))
    assert drain_time(t, np.array([0, 5, 5, 0, 0.0]), 10.0, []) == 0.0
    assert math.isinf(drain_time(t, np.array([0, 50, 500, 900, 999.0]), 10.0, []))
    # Already settled when the event ends.
    assert drain_time(t, np.array([0, 0, 0, 0, 0.0]), 10.0, [(5.0, 15.0)]) == 0.0
    assert math.isinf(drain_time(t, np.array([]), 10.0, [(5.0, 15.0)]))


def test_junit_xml_one_testcase_per_slo_with_failure_messages(run):
    res = evaluate(run, scenario(["p99(latency.svc.fast) < 20ms", "max(rejected.svc) == 0", "max(backlog.sub-a) < 100"]))
    root = ET.fromstring(junit_xml(res, "dispatch_wave"))
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r["text"] for r in res]
    assert cases[0].find("failure") is None
    assert cases[1].find("failure").get("message") == "observed 10, required == 0"
    assert cases[2].find("failure").get("message") == "observed 3000, required < 100"
