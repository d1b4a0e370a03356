"""Queueing SLOs: `wait.SERVICE[.CHANNEL]` (queueing delay) and `pwait.SERVICE[.CHANNEL]`
(the fraction of arrivals that waited), judged from a simulated run directory, and
entities checked against the system."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.unit.mmc_cases import write_case
from surgesim.rundir import Run
from surgesim.schema import SchemaError, Slo, load_experiment
from surgesim.sim.engine import Engine
from surgesim.sim.output import write_run


def test_grammar_accepts_wait_and_pwait():
    s = Slo.model_validate("p99(wait.command) < 50ms")
    assert (s.func, s.metric, s.entity, s.threshold) == ("p99", "wait", "command", 0.05)
    s = Slo.model_validate("max(pwait.eta.eta-sub) < 0.2")
    assert (s.metric, s.entity, s.threshold) == ("pwait", "eta.eta-sub", 0.2)


def test_unknown_wait_entity_is_named(tmp_path):
    path = write_case(tmp_path, c=2, rho=0.5, duration=60)
    path.write_text(path.read_text().replace("mean(wait.server) < 1000s", "p99(wait.server.play) < 1s"))
    with pytest.raises(SchemaError) as info:
        load_experiment(path)
    assert info.value.problems == [
        f"{path}:11: slos[0]: wait.server.play: no such service[.route, subscription or trigger] in system 'queue'"]


def test_wait_slos_observe_the_run(tmp_path):
    """A queue that forms in a burst: M/M/2 at utilisation 0.5, then 0.95 for the second half."""
    path = write_case(tmp_path / "files", c=2, rho=0.5, duration=1200, step=1.0, seed=4)
    text = path.read_text().replace("slos:\n  - mean(wait.server) < 1000s\n", """\
  waves:
    - {name: rush, at: 600s, duration: 600s, multiply: {arrivals: 1.9}}
slos:
  - p99(wait.server) < 10s
  - mean(wait.server.work) < 10s
  - mean(pwait.server) < 0.9
  - max(pwait.server) < 0.99
  - p50(pwait.server) < 0.99
""")
    path.write_text(text)
    exp = load_experiment(path)
    eng = Engine(exp).run()
    summary = write_run(eng, tmp_path / "run")
    w = summary["wait"]["server"]
    run = Run(tmp_path / "run")
    got = {s["text"]: s["observed"] for s in summary["slos"]}
    assert got["mean(pwait.server) < 0.9"] == pytest.approx(w["pwait"], rel=1e-9)
    assert got["p99(wait.server) < 10s"] == pytest.approx(w["p99"], rel=0.01)
    assert got["mean(wait.server.work) < 10s"] == pytest.approx(w["mean"], rel=0.01)
    # per window: the rush's windows wait far more often than the calm ones
    h = run.histograms
    rows = h[h["path"] == "wait/server.work"]
    per = rows.assign(w=np.where(rows["bucket"] == 0, 0, rows["count"])).groupby("time_s")[["count", "w"]].sum()
    frac = (per["w"] / per["count"]).to_numpy()
    assert got["max(pwait.server) < 0.99"] == pytest.approx(frac.max())
    assert frac.max() > 0.8 > w["pwait"] > 0.3 > frac.min()
    assert got["p50(pwait.server) < 0.99"] == pytest.approx(float(np.percentile(frac, 50, method="higher")))
    # the summary and the timeseries carry the wait too
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["wait"]["server.work"]["count"] == w["count"]
    ts = run.timeseries
    assert (ts["metric"] == "surgesim/service/queue_wait/p99").any()
