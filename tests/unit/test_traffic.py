"""The traffic model: rates over time, waves, curves, and the arrivals drawn from them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from surgesim.schema import load_experiment
from surgesim.schema.scenario import Scenario
from surgesim.sim import traffic as tr

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


class _Exp:
    """Just what the traffic model reads: the scenario."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario


def exp_of(traffic: dict, **extra) -> _Exp:
    return _Exp(Scenario.model_validate({"name": "t", "system": "x.yaml", "duration": extra.pop("duration", "1d"),
                                         "traffic": traffic, **extra}))


@pytest.fixture(scope="module")
def dispatch():
    exp = load_experiment(SCENARIOS / "dispatch_wave.yaml")
    return exp, {s.name: s for s in exp.scenario.traffic.sources}


def test_fleet_baseline_is_vehicles_over_interval(dispatch):
    exp, src = dispatch
    assert tr.source_rate(exp, src["gps"], 0) == pytest.approx(8200 / 5)
    assert tr.source_rate(exp, src["gps"], 89 * 60) == pytest.approx(1640)


def test_dispatch_wave_rates_during_the_nine_minutes(dispatch):
    exp, src = dispatch
    # The wave is at 90m for 9m with 30 s ramps; its plateau is 90m30s .. 98m30s.
    for t in (90 * 60 + 30, 94 * 60, 98 * 60 + 30):
        assert tr.source_rate(exp, src["gps"], t) == pytest.approx(5100)
        assert tr.source_rate(exp, src["mark_delivered"], t) == pytest.approx(900)
    after = tr.source_rate(exp, src["gps"], 99 * 60 + 1)
    assert after == pytest.approx(1640)
    # Other sources are untouched by the wave.
    curve = exp.scenario.traffic.curves["diurnal"]
    shaped = 210000 / 86400 * curve.at(6 * 3600 + 94 * 60) / curve.mean()
    assert tr.source_rate(exp, src["create_shipment"], 94 * 60) == pytest.approx(shaped)


def test_wave_ramp_is_linear(dispatch):
    exp, src = dispatch
    start = 90 * 60
    ramp = [tr.source_rate(exp, src["gps"], start + x) for x in (0, 7.5, 15, 22.5, 30)]
    assert ramp == pytest.approx([1640, 1640 + 3460 * 0.25, 1640 + 3460 * 0.5, 1640 + 3460 * 0.75, 5100])
    end = 99 * 60
    down = [tr.source_rate(exp, src["gps"], end - x) for x in (0, 15, 30)]
    assert down == pytest.approx([1640, 1640 + 3460 * 0.5, 5100])


def test_per_day_integrates_to_per_day_over_a_whole_day(dispatch):
    exp, src = dispatch
    for name in ("create_shipment", "mark_delivered", "dispatch"):
        # mark_delivered has the wave inside its first 3 h; a day from 06:00 includes it, so
        # integrate a source without waves over a day for the per_day property.
        if name == "mark_delivered":
            continue
        counts = tr.expected_counts(exp, src[name], 0.0, 10.0, 8640)
        assert counts.sum() == pytest.approx(src[name].per_day, rel=0.005)
    series = tr.rate_series(exp, src["create_shipment"], 0.0, 1.0, 86400)
    assert series.sum() == pytest.approx(210000, rel=0.005)


def test_curve_shapes_per_day_and_peaks_follow_the_curve(dispatch):
    exp, src = dispatch
    s = src["create_shipment"]
    # 03:00 is the curve's trough (0.03), 09:00 its peak (1.6); start_clock is 06:00.
    trough = tr.source_rate(exp, s, 21 * 3600)
    peak = tr.source_rate(exp, s, 3 * 3600)
    assert peak / trough == pytest.approx(1.6 / 0.03)
    mean = tr.CurveTable(list(exp.scenario.traffic.curves["diurnal"].points)).mean
    assert peak == pytest.approx(210000 / 86400 * 1.6 / mean)
    # The exact mean agrees with the schema's own sampled mean (knots on whole minutes).
    assert mean == pytest.approx(exp.scenario.traffic.curves["diurnal"].mean(), rel=1e-9)


def test_curve_wraps_around_midnight():
    exp = exp_of({"curves": {"c": {"22:00": 1.0, "02:00": 3.0}},
                  "sources": [{"name": "s", "rate": 10, "curve": "c", "publish": {"topic": "tt1"}}]},
                 start_clock="23:00")
    s = exp.scenario.traffic.sources[0]
    # 00:00 is halfway from 22:00 (1.0) to 02:00 (3.0).
    assert tr.source_rate(exp, s, 3600) == pytest.approx(20.0)
    assert tr.source_rate(exp, s, 0) == pytest.approx(15.0)


def test_fleet_curve_is_fraction_of_vehicles_active():
    exp = exp_of({"curves": {"on_road": {"00:00": 0.1, "12:00": 1.5}},
                  "sources": [{"name": "gps", "kind": "fleet", "vehicles": 1000, "ping_interval": "10s",
                               "curve": "on_road", "publish": {"topic": "tt1"}}]})
    s = exp.scenario.traffic.sources[0]
    assert tr.source_rate(exp, s, 0) == pytest.approx(10.0)
    # Above 1 is clipped: a fleet cannot have more vehicles on the road than it has.
    assert tr.source_rate(exp, s, 12 * 3600) == pytest.approx(100.0)


def test_multiplier_scales_everything_including_waves():
    base = {"sources": [{"name": "a", "rate": 10, "publish": {"topic": "tt1"}}],
            "waves": [{"name": "w", "at": "1h", "duration": "10m", "rates": {"a": 50}}]}
    one = exp_of(base)
    four = exp_of({**base, "multiplier": 4.0})
    s1, s4 = one.scenario.traffic.sources[0], four.scenario.traffic.sources[0]
    for t in (0, 3600 + 300):
        assert tr.source_rate(four, s4, t) == pytest.approx(4 * tr.source_rate(one, s1, t))
    assert tr.source_rate(four, s4, 3900) == pytest.approx(200)


def test_multiply_wave_scales_the_shaped_rate():
    exp = exp_of({"sources": [{"name": "a", "rate": 3, "publish": {"topic": "tt1"}}],
                  "waves": [{"name": "viral", "at": "40m", "duration": "30m", "ramp": "2m", "multiply": {"a": 20}}]})
    s = exp.scenario.traffic.sources[0]
    assert tr.source_rate(exp, s, 39 * 60) == pytest.approx(3)
    assert tr.source_rate(exp, s, 41 * 60) == pytest.approx(3 + 0.5 * 57)
    assert tr.source_rate(exp, s, 55 * 60) == pytest.approx(60)


def test_once_source_has_no_rate():
    exp = exp_of({"sources": [{"name": "go", "kind": "once", "at": "5m", "job": "j"}]})
    s = exp.scenario.traffic.sources[0]
    assert tr.source_rate(exp, s, 300) == 0.0
    assert tr.arrival_counts(exp, s, 0, 1, 600, np.random.default_rng(0)).sum() == 0
    assert tr.arrival_times(exp, s, 0, 600, np.random.default_rng(0)).size == 0


def test_rate_series_matches_source_rate_at_midpoints(dispatch):
    exp, src = dispatch
    series = tr.rate_series(exp, src["gps"], 5390.0, 2.0, 30)
    expect = [tr.source_rate(exp, src["gps"], 5390.0 + (i + 0.5) * 2.0) for i in range(30)]
    assert series == pytest.approx(expect)


def test_poisson_counts_have_poisson_mean_and_variance():
    exp = exp_of({"sources": [{"name": "a", "rate": 40, "publish": {"topic": "tt1"}}]})
    s = exp.scenario.traffic.sources[0]
    counts = tr.arrival_counts(exp, s, 0.0, 0.5, 40000, np.random.default_rng(3))
    assert counts.dtype == np.int64
    assert counts.mean() == pytest.approx(20.0, rel=0.01)
    assert counts.var() == pytest.approx(20.0, rel=0.05)


def test_periodic_counts_are_deterministic_and_carry_the_remainder():
    exp = exp_of({"sources": [{"name": "a", "rate": 0.3, "arrivals": "periodic", "publish": {"topic": "tt1"}}]})
    s = exp.scenario.traffic.sources[0]
    a = tr.arrival_counts(exp, s, 0.0, 1.0, 100, np.random.default_rng(1))
    b = tr.arrival_counts(exp, s, 0.0, 1.0, 100, np.random.default_rng(2))
    assert np.array_equal(a, b)
    assert set(np.unique(a)) <= {0, 1}
    assert a.sum() == 30  # 0.3/s x 100 s exactly, no Poisson noise


def test_thinning_count_distribution_matches_the_integrated_intensity():
    exp = exp_of({"sources": [{"name": "a", "rate": 2, "publish": {"topic": "tt1"}}],
                  "waves": [{"name": "w", "at": "20s", "duration": "40s", "ramp": "10s", "rates": {"a": 12}}]})
    s = exp.scenario.traffic.sources[0]
    expected = tr.expected_counts(exp, s, 0.0, 0.25, 400).sum()  # the first 100 s
    assert expected == pytest.approx(2 * 100 + 10 * 30, rel=0.001)  # plateau 20 s + two ramps of 10 s
    rng = np.random.default_rng(11)
    n = np.array([tr.arrival_times(exp, s, 0.0, 100.0, rng).size for _ in range(2000)])
    assert n.mean() == pytest.approx(expected, rel=0.01)
    assert n.var() == pytest.approx(expected, rel=0.1)
    # Arrivals concentrate where the intensity is high: the plateau has 12/s.
    t = np.concatenate([tr.arrival_times(exp, s, 0.0, 100.0, rng) for _ in range(200)])
    assert np.all(np.diff(np.sort(t)) >= 0) and t.min() >= 0 and t.max() < 100
    plateau = ((t >= 30) & (t < 50)).sum() / 200 / 20
    quiet = (t >= 70).sum() / 200 / 30
    assert plateau == pytest.approx(12, rel=0.05)
    assert quiet == pytest.approx(2, rel=0.1)


def test_thinning_handles_a_step_wave_inside_a_cell():
    exp = exp_of({"sources": [{"name": "a", "rate": 1, "publish": {"topic": "tt1"}}],
                  "waves": [{"name": "w", "at": "10.3s", "duration": "5s", "rates": {"a": 400}}]})
    s = exp.scenario.traffic.sources[0]
    rng = np.random.default_rng(5)
    n = np.array([tr.arrival_times(exp, s, 0.0, 30.0, rng, cell=4.0).size for _ in range(300)])
    assert n.mean() == pytest.approx(25 + 400 * 5, rel=0.01)


def test_periodic_arrival_times_are_evenly_spaced():
    exp = exp_of({"sources": [{"name": "a", "rate": 4, "arrivals": "periodic", "publish": {"topic": "tt1"}}]})
    s = exp.scenario.traffic.sources[0]
    t = tr.arrival_times(exp, s, 0.0, 10.0, np.random.default_rng(0))
    assert t.size == 40
    assert np.diff(t) == pytest.approx(np.full(39, 0.25))


def test_seeded_determinism(dispatch):
    exp, src = dispatch
    a = tr.arrival_counts(exp, src["gps"], 0, 1, 3600, np.random.default_rng(42))
    b = tr.arrival_counts(exp, src["gps"], 0, 1, 3600, np.random.default_rng(42))
    c = tr.arrival_counts(exp, src["gps"], 0, 1, 3600, np.random.default_rng(43))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    ta = tr.arrival_times(exp, src["dispatch"], 0, 3600, np.random.default_rng(1))
    tb = tr.arrival_times(exp, src["dispatch"], 0, 3600, np.random.default_rng(1))
    assert np.array_equal(ta, tb)


def test_fleet_keys_are_vehicles_pinging_in_turn(dispatch):
    _, src = dispatch
    keys = tr.message_keys(src["gps"], 820_000, np.random.default_rng(0))
    assert keys.min() == 0 and keys.max() == 8199
    per_vehicle = np.bincount(keys, minlength=8200)
    assert (per_vehicle == 100).all()
    # each vehicle's next ping is 8,200 messages later, whatever the batch boundaries
    more = tr.message_keys(src["gps"], 10, np.random.default_rng(0), sent=820_000 + 8195)
    assert more.tolist() == [8195, 8196, 8197, 8198, 8199, 0, 1, 2, 3, 4]


def test_sighting_payloads_have_the_table_fields():
    rows = tr.sighting_payloads(50, np.random.default_rng(0), dt.date(2025, 3, 14))
    assert len(rows) == 50 and len({r["sighting_id"] for r in rows}) == 50
    for r in rows:
        assert set(r) == {"sighting_id", "sighting_date", "seen_at", "breed", "lat", "lng"}
        assert r["sighting_date"] == "2025-03-14"
        assert r["seen_at"].startswith("2025-03-14T") and r["seen_at"].endswith("Z")
        assert r["breed"] in tr.BREEDS
        assert abs(r["lat"] - 51.5) < 0.2 and abs(r["lng"] + 0.13) < 0.3
    late = tr.sighting_payloads(20, np.random.default_rng(0), dt.datetime(2025, 3, 15, 0, 20))
    # Seen up to an hour before: some fall on the previous day, and the date follows seen_at.
    assert {r["sighting_date"] for r in late} == {"2025-03-14", "2025-03-15"}
    for r in late:
        assert r["seen_at"][:10] == r["sighting_date"]
    again = tr.sighting_payloads(50, np.random.default_rng(0), dt.date(2025, 3, 14))
    assert again == rows
