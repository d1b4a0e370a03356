import json

import numpy as np
import pandas as pd
import pytest

from surgesim.histogram import Histogram
from surgesim.rundir import METRICS, RunWriter, histogram_rows, load_run


def _write(tmp_path):
    w = RunWriter(tmp_path / "run")
    ts = pd.DataFrame({
        "time_s": [0.0, 1.0, 0.0, 1.0],
        "metric": [METRICS["backlog"]] * 2 + [METRICS["instances"]] * 2,
        "entity": ["eta-sub", "eta-sub", "command", "command"],
        "value": [5.0, 2.0, 2.0, 3.0],
    })
    w.write_timeseries(ts)
    h0, h1 = Histogram(), Histogram()
    h0.record(np.full(99, 0.01))
    h0.record([1.0])
    h1.record(np.full(100, 0.02))
    w.write_histograms(pd.concat([
        histogram_rows(0.0, "latency/command.mark_delivered", h0),
        histogram_rows(1.0, "latency/command.mark_delivered", h1),
        histogram_rows(0.0, "latency/command.create_shipment", h1),
    ]))
    w.write_faults([{"kind": "dependency_latency", "target": "sms-gateway", "start_s": 10.0, "end_s": 20.0, "details": {}}])
    w.write_summary({"mode": "sim", "ratio": float("nan"), "x": 1 / 3})
    return w.dir


def test_round_trip(tmp_path):
    run = load_run(_write(tmp_path))
    assert list(run.series("backlog", "eta-sub")) == [5.0, 2.0]
    assert run.paths("latency") == ["command.create_shipment", "command.mark_delivered"]
    one = run.histogram("latency/command.mark_delivered")
    assert one.count == 200
    assert one.percentile(99) == pytest.approx(0.02, rel=0.01)
    assert run.histogram("latency/command.mark_delivered", start_s=0, end_s=1).max == pytest.approx(1.0, rel=0.01)
    assert run.histogram("latency/command").count == 300  # a service alone merges its routes
    assert run.faults[0]["target"] == "sms-gateway"


def test_summary_is_stable_json(tmp_path):
    d = _write(tmp_path)
    text = (d / "summary.json").read_text()
    data = json.loads(text)
    assert data["ratio"] is None and data["x"] == 0.333333333 and data["format"] == 1
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"


def test_not_a_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a surgesim run directory"):
        load_run(tmp_path)
