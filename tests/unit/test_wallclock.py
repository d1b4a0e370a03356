"""The simulator run as a live run runs (surgesim/wallclock.py): the scenario's timeline in
wall time, the live volume, the live quotas and backoffs; written back on the scenario's
clock so a calibration report compares like with like."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from surgesim.schema import load_experiment
from surgesim.wallclock import NotAsLive, simulate_as_live, wall_experiment

ROOT = Path(__file__).resolve().parents[2]
SPIKE = ROOT / "scenarios" / "ci_spike.yaml"


def test_the_timeline_compresses_and_the_volume_scales_but_latencies_do_not() -> None:
    exp = load_experiment(SPIKE)
    w = wall_experiment(exp, 15, 0.3)
    assert w.scenario.duration == pytest.approx(1200 / 15)
    assert w.scenario.step == 1.0  # one window per live sample
    assert w.scenario.traffic.multiplier == pytest.approx(0.3)
    [wave] = w.scenario.traffic.waves
    assert (wave.at, wave.duration, wave.ramp) == pytest.approx((480 / 15, 300 / 15, 30 / 15))
    sms = {a.name: a for a in w.system.external_apis}["sms-gateway"]
    assert sms.rate_limit == pytest.approx(3000 * 0.3)
    assert sms.latency.p50 == exp.system.external_apis[0].latency.p50  # a wall second is a wall second
    eta = next(s for s in w.system.subscriptions if s.name == "eta-sub")
    assert eta.retry.min_backoff == pytest.approx(10 / 15)
    assert w.plan == exp.plan and w.scenario.seed == exp.scenario.seed


def test_faults_move_with_the_timeline(tmp_path: Path) -> None:
    exp = load_experiment(ROOT / "scenarios" / "sms_degradation.yaml")
    w = wall_experiment(exp)  # the scenario's own live scales: x60, 0.15
    [f] = w.scenario.faults
    assert (f.at, f.duration) == pytest.approx((75 * 60 / 60, 40 * 60 / 60))
    assert f.latency.p50 == exp.scenario.faults[0].latency.p50


def test_daily_curves_are_read_on_the_compressed_clock() -> None:
    from surgesim.sim import traffic

    exp = load_experiment(ROOT / "scenarios" / "dispatch_wave.yaml")
    ts, rs = exp.scenario.live.time_scale, exp.scenario.live.rate_scale
    w = wall_experiment(exp)
    for src in exp.scenario.traffic.sources:
        if src.kind == "once" or src.job is not None:
            continue
        wsrc = next(s for s in w.scenario.traffic.sources if s.name == src.name)
        for t in (0.0, 0.3 * exp.scenario.duration, 0.77 * exp.scenario.duration):
            # the wall-time run sends, per wall second, the scenario's rate at the same moment x rate_scale
            # (the source's own, if it has one: the dispatch saga's sources are sent in full)
            own = src.rate_scale if src.rate_scale is not None else rs
            assert traffic.source_rate(w, wsrc, t / ts) == pytest.approx(traffic.source_rate(exp, src, t) * own, rel=1e-6)


def test_what_a_wall_time_run_cannot_express_is_refused_by_name() -> None:
    exp = load_experiment(ROOT / "scenarios" / "embeddings_backfill.yaml")
    with pytest.raises(NotAsLive, match=r"embeddings_backfill.yaml: .*Cloud Run Jobs"):
        wall_experiment(exp)


def test_the_run_is_written_on_the_scenarios_clock(tmp_path: Path) -> None:
    sc = yaml.safe_load(SPIKE.read_text())
    sc["duration"] = "6m"
    sc["traffic"]["waves"][0].update(at="2m", duration="2m")
    sc["system"] = str(ROOT / "scenarios" / "systems" / "meridian.yaml")
    sc["plan"] = str(ROOT / "scenarios" / "plans" / "baseline.yaml")
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(sc))
    summary, run_dir = simulate_as_live(tmp_path / "short.yaml", None, tmp_path / "run")
    assert summary["mode"] == "sim" and summary["scales"] == {"time_scale": 15.0, "rate_scale": 0.3}
    assert summary["duration_s"] == pytest.approx(360) and summary["step_s"] == pytest.approx(15)
    from surgesim.rundir import load_run

    run = load_run(run_dir)
    times = sorted(run.timeseries["time_s"].unique())
    assert times[1] - times[0] == pytest.approx(15) and times[-1] < 360
    [wave] = [e for e in run.faults if e["kind"] == "wave"]
    assert (wave["start_s"], wave["end_s"]) == pytest.approx((120, 240))
    # the live volume: 100 vehicles every 5 s x 0.3, over 24 wall seconds
    pings = summary["totals"]["subscriptions"]["telemetry-livemap"]["published"]
    assert 100 / 5 * 0.3 * 24 * 0.7 < pings < 100 / 5 * 0.3 * 24 * 1.3
    assert [r["text"] for r in summary["slos"]] == [s for s in sc["slos"]]  # judged on the scenario's clock
