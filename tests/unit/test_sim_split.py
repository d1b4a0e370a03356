"""The two-process run (sim/split.py): where it cuts, that the merged run conserves every
message and writes exactly what one process writes, and that a failure in the upstream
process surfaces."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from surgesim.schema import Step, load_experiment
from surgesim.sim import split
from surgesim.sim.engine import Engine
from surgesim.sim.output import write_run
from tests.unit.test_sim_engine import SCENARIOS, check_conservation, trimmed


@pytest.fixture(scope="module")
def wave_cut():
    # 6 minutes into the dispatch wave: 8,200 vehicles, the wave's 5,100 pings/s, the
    # commands and every reactor.
    return trimmed("dispatch_wave.yaml", duration=360, shift=88 * 60)


@pytest.fixture(scope="module")
def both(wave_cut):
    return Engine(wave_cut).run(), split.run_experiment(wave_cut)


def test_meridian_is_cut_at_the_telemetry_topic(wave_cut) -> None:
    cut = split.find_cut(wave_cut)
    assert cut is not None
    assert cut.sources == {"gps"}
    assert cut.services == {"live-map", "geofence"}
    assert cut.subscriptions == {"telemetry-livemap", "telemetry-geofence", "telemetry-bigquery",
                                 "livemap-dlq-hold", "geofence-dlq-hold"}
    assert cut.exports == {"logistics.events"}  # geofence crossings go to the reactors


def test_no_cut_without_a_fleet_or_when_something_downstream_feeds_the_telemetry_topic(wave_cut) -> None:
    assert split.find_cut(load_experiment(SCENARIOS / "consumer_down.yaml")) is None  # no fleet source
    sysm = wave_cut.system
    pod = sysm.service("pod")
    loop = pod.model_copy(update={"steps": [*pod.steps, Step.model_validate({"publish": {"topic": "vehicle.telemetry"}})]})
    looped = sysm.model_copy(update={"services": [loop if s.name == "pod" else s for s in sysm.services]})
    assert split.find_cut(replace(wave_cut, system=looped)) is None


def test_the_upstream_half_is_exactly_the_one_process_run(both) -> None:
    one, two = both
    assert two.cut is not None and one.cut is None
    t1, t2 = check_conservation(one), check_conservation(two)
    for name in ("telemetry-livemap", "telemetry-geofence", "telemetry-bigquery"):
        assert t2["subscriptions"][name] == t1["subscriptions"][name], name
    assert t2["topics"]["vehicle.telemetry"] == t1["topics"]["vehicle.telemetry"]
    assert t2["services"]["live-map"] == t1["services"]["live-map"]
    assert t2["firestore"]["LiveMap"] == t1["firestore"]["LiveMap"]
    assert t2["bigquery"] == t1["bigquery"]
    # the crossings reach the reactors: logistics.events counts them once, in the merged run
    assert t2["topics"]["logistics.events"] == t1["topics"]["logistics.events"]
    assert t1["topics"]["vehicle.telemetry"]["published"] > 1_000_000


def test_the_split_run_writes_what_one_process_writes(both, tmp_path: Path) -> None:
    """Byte for byte: a node takes one time-ordered batch per channel per step, so it does
    not matter which process published what; only summary.engine says how it ran."""
    one, two = both
    a = write_run(one, tmp_path / "one")
    b = write_run(two, tmp_path / "two")
    assert a["engine"]["split"] is None
    assert b["engine"]["split"]["upstream_services"] == ["geofence", "live-map"]
    assert b["engine"]["split"]["handed_over"] == ["logistics.events"]
    a["engine"] = b["engine"] = None
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    for name in ("timeseries.parquet", "histograms.parquet"):
        x, y = (pd.read_parquet(tmp_path / d / name) for d in ("one", "two"))
        key = list(x.columns[:3])
        assert len(x) > 1000
        pd.testing.assert_frame_equal(x.sort_values(key, ignore_index=True), y.sort_values(key, ignore_index=True))


def test_a_failure_upstream_is_raised_with_its_traceback(wave_cut, monkeypatch) -> None:
    def boom(eng, cut):
        raise RuntimeError("upstream broke")

    monkeypatch.setattr(split, "_snapshot", boom)  # the forked child inherits the patch
    short = replace(wave_cut, scenario=wave_cut.scenario.model_copy(update={"duration": 60.0}))
    with pytest.raises(split.SplitFailed, match="upstream broke"):
        split.run_experiment(short)
