"""`surgesim calibrate`: on a "live" run whose truth is known (the simulator run with a
plan that adds a known overhead to the route), the fit recovers that overhead's
distribution, the overlay's prediction meets the run it was fitted on, and it predicts a
second run at a load where queues form, which it was not fitted on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from surgesim.calibrate import GRID, calibrate, load, median_error, step_overhead
from surgesim.cli import cli
from surgesim.commands.sim import simulate
from surgesim.schema import load_experiment
from surgesim.wallclock import simulate_as_live

ROOT = Path(__file__).resolve().parents[2]
TRUTH = {"p50": 0.080, "p99": 0.200}  # the local stack's overhead the fit must find


def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(fit scenario at 4/s, held-out scenario at 14/s, truth plan)."""
    (tmp_path / "systems").mkdir()
    (tmp_path / "plans").mkdir()
    (tmp_path / "systems" / "mmc.yaml").write_text((ROOT / "scenarios" / "systems" / "mmc.yaml").read_text())
    plan = yaml.safe_load((ROOT / "scenarios" / "plans" / "mmc.yaml").read_text())
    (tmp_path / "plans" / "mmc.yaml").write_text(yaml.safe_dump(plan))
    truth = dict(plan, name="truth")
    truth["services"] = {"server": dict(plan["services"]["server"], routes=[
        {"name": "work", "path": "/work", "steps": [{"cpu": "100ms"}, {"sleep": TRUTH}]}])}
    (tmp_path / "plans" / "truth.yaml").write_text(yaml.safe_dump(truth))
    out = []
    for name, rate in (("light", "4/s"), ("busy", "14/s")):
        sc = yaml.safe_load((ROOT / "scenarios" / "mmc_08.yaml").read_text())
        sc.update(name=name, duration="20m", traffic={"sources": [{"name": "arrivals", "rate": rate,
                                                                   "request": {"service": "server", "route": "work"}}]})
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(sc))
        out.append(tmp_path / f"{name}.yaml")
    return out[0], out[1], tmp_path / "plans" / "truth.yaml"


def test_one_round_adds_what_the_model_misses_quantile_by_quantile() -> None:
    sim = np.linspace(0.010, 0.050, len(GRID))
    live = sim + 0.080
    o = step_overhead(None, sim, live)
    assert o == pytest.approx(np.full(len(GRID), 0.080))
    # a live run faster than the model at the low quantiles: never a negative sleep, still sorted
    o = step_overhead(None, sim, sim - 0.005 + np.linspace(0, 0.1, len(GRID)))
    assert (o >= 0).all() and (np.diff(o) >= 0).all() and o[0] == 0 and o[-1] > 0.09
    # the next round corrects the previous overhead by what is still missing
    o2 = step_overhead(np.full(len(GRID), 0.080), sim + 0.070, live)
    assert o2 == pytest.approx(np.full(len(GRID), 0.090))


def test_runs_are_pooled_sample_by_sample(tmp_path: Path) -> None:
    from surgesim.calibrate import pooled

    light, _, truth = files(tmp_path)
    runs = [load(simulate(light, truth, s, tmp_path / f"r{s}", False, quiet=True)[1]) for s in (1, 2)]
    counts = [r.run.histogram("latency/server.work").count for r in runs]
    h = pooled(runs, "latency/server.work")
    assert h.count == sum(counts) and min(counts) > 0
    assert (h.counts == runs[0].run.histogram("latency/server.work").counts
            + runs[1].run.histogram("latency/server.work").counts).all()


def test_fit_recovers_a_known_overhead_and_predicts_a_busier_run(tmp_path: Path) -> None:
    light, busy, truth = files(tmp_path)
    _, live_dir = simulate(light, truth, 5, tmp_path / "live", False, quiet=True)
    live = load(live_dir)
    exp = load_experiment(light)

    def sim(plan: dict | None, k: int):
        plan_file = None
        if plan is not None:
            plan_file = tmp_path / "plans" / f"round{k}.yaml"
            plan_file.write_text(yaml.safe_dump(plan))
        return load(simulate_as_live(light, plan_file, tmp_path / f"sim{k}", seed=6, live_run=live_dir)[1])

    fit, before, after = calibrate(exp, live, sim, rounds=2)
    b, n = median_error(before, live)
    a, _ = median_error(after, live)
    assert b > 0.5 and n >= 2  # the model without the overhead is far off
    assert a <= 0.10
    [route] = [f for f in fit.fitted if f["what"] == "route"]
    assert route["path"] == "server.work" and route["target"] == "route server.work"
    assert route["p50"] == pytest.approx(TRUTH["p50"], rel=0.10)
    assert route["p99"] == pytest.approx(TRUTH["p99"], rel=0.20)
    [step] = [s for s in fit.plan["services"]["server"]["routes"][0]["steps"] if "sleep" in s]
    assert step["sleep"]["dist"] == "empirical" and len(step["sleep"]["samples"]) == len(GRID)
    assert [r["round"] for r in fit.rounds] == [0, 1, 2]
    overlay = tmp_path / "plans" / "calibrated.yaml"
    overlay.write_text(yaml.safe_dump(fit.plan))
    assert load_experiment(light, overlay).plan.service("server").max_instances == 4  # the rest of the plan kept
    # held out: at 14/s the four slots are ~70% busy and requests queue; the fitted overhead
    # holds the slot as the truth's does, so the overlay predicts the queueing too
    _, busy_live = simulate(busy, truth, 7, tmp_path / "busy_live", False, quiet=True)
    _, busy_sim = simulate_as_live(busy, overlay, tmp_path / "busy_sim", seed=8)
    _, busy_before = simulate_as_live(busy, None, tmp_path / "busy_before", seed=8)
    predicted, _ = median_error(load(busy_sim), load(busy_live))
    unfitted, _ = median_error(load(busy_before), load(busy_live))
    assert predicted <= 0.20 < unfitted
    live_p99 = load(busy_live).summary["latency"]["server.work"]["p99"]
    assert live_p99 > 1.5 * load(live_dir).summary["latency"]["server.work"]["p99"]  # a queue did form


def test_calibrate_command_fits_reports_and_predicts(tmp_path: Path) -> None:
    light, busy, truth = files(tmp_path)
    _, live_dir = simulate(light, truth, 5, tmp_path / "live", False, quiet=True)
    _, live2 = simulate(light, truth, 9, tmp_path / "live2", False, quiet=True)  # a second run of it, pooled
    _, busy_live = simulate(busy, truth, 7, tmp_path / "busy_live", False, quiet=True)
    res = CliRunner().invoke(cli, ["calibrate", str(light), str(live_dir), str(live2), "--seed", "6", "--rounds", "2",
                                   "--predict", str(busy), str(busy_live)])
    assert res.exit_code == 0, res.output
    fitted = next(x for x in res.output.splitlines() if x.startswith("fitted  server.work"))
    assert float(fitted.split("p50 ")[1].split(" ms")[0]) == pytest.approx(80, rel=0.10)
    lines = [x for x in res.output.splitlines() if "median |relative error| before" in x]
    assert [x.split(":")[0] for x in lines] == [str(live_dir), str(live2)]  # judged against each run fitted on
    for line in lines:
        before = float(line.split("before: ")[1].split("%")[0])
        after = float(line.split("after: ")[1].split("%")[0])
        assert before > 50 and after <= 10
    pred = next(x for x in res.output.splitlines() if x.startswith("predicted"))
    assert float(pred.split("median |relative error| ")[1].split("%")[0]) <= 20
    assert (live_dir / "calibrated-plan.yaml").is_file()
    md = (tmp_path / "live-calibration" / "calibration.md").read_text()
    assert "Fitted on the live runs live, live2 pooled" in md and "What could not be fitted" in md and "server.work" in md
    pmd = (tmp_path / "busy_live-prediction" / "calibration.md").read_text()
    assert "was not used for the fit" in pmd
    html = (tmp_path / "busy_live-prediction" / "calibration.html").read_text()
    assert "The fit" in html and "What could not be fitted" in html
    # the overlay predicts through the ordinary command too
    res = CliRunner().invoke(cli, ["sim", str(busy), "--plan", str(live_dir / "calibrated-plan.yaml"), "--as-live",
                                   "--seed", "8", "--out", str(tmp_path / "by_sim"), "--no-report"])
    assert res.exit_code == 0, res.output
    assert load(tmp_path / "by_sim").summary["as_live"]["time_scale"] == 1.0


DELAYS_SYSTEM = """
name: outbox
topics: [{name: events}]
subscriptions:
  - {name: events-bq, topic: events, delivery: bigquery, bigquery: {table: ds.events}}
services:
  - name: api
    routes:
      - name: put
        path: /put
        steps: [{cpu: 2ms}, {firestore: {op: write, collection: docs}}, {publish: {topic: events}}]
  - name: fn
    steps: [{cpu: 5ms}]
stores:
  firestore: [{name: docs}]
  bigquery: [{dataset: ds, table: events, columns: [{name: data, type: STRING}]}]
triggers:
  - {name: doc-written, document: "docs/{id}", events: [written], target: fn}
"""


def test_fit_replaces_an_assumed_trigger_latency_and_finds_a_bigquery_write_delay(tmp_path: Path) -> None:
    """The two delays that are not handler work: the "live" run's Firestore trigger delivers
    in ~20 ms (the local bridge) where the system assumes Eventarc's 300 ms, and its BigQuery
    subscription lands rows ~300 ms after publish where the model writes at once. The fit
    writes both as the plan's environment figures and the overlay then predicts the lags."""
    (tmp_path / "s.yaml").write_text(DELAYS_SYSTEM)
    (tmp_path / "base.yaml").write_text("name: base\n")
    truth = {"name": "truth", "triggers": {"doc-written": {"delivery_latency": {"p50": "20ms", "p99": "80ms"}}},
             "subscriptions": {"events-bq": {"write_latency": {"p50": "300ms", "p99": "600ms"}}}}
    (tmp_path / "truth.yaml").write_text(yaml.safe_dump(truth))
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({
        "name": "x", "system": "s.yaml", "plan": "base.yaml", "duration": "10m",
        "traffic": {"sources": [{"name": "puts", "rate": 5, "request": {"service": "api", "route": "put"}}]}}))
    scenario = tmp_path / "x.yaml"
    _, live_dir = simulate(scenario, tmp_path / "truth.yaml", 5, tmp_path / "live", False, quiet=True)
    live = load(live_dir)
    exp = load_experiment(scenario)

    def sim(plan: dict | None, k: int):
        plan_file = None
        if plan is not None:
            plan_file = tmp_path / f"round{k}.yaml"
            plan_file.write_text(yaml.safe_dump(plan))
        return load(simulate_as_live(scenario, plan_file, tmp_path / f"sim{k}", seed=6, live_run=live_dir)[1])

    fit, before, after = calibrate(exp, live, sim, rounds=2)
    was, got, want = (r.summary["lag"] for r in (before, after, live))
    assert was["doc-written"]["p50"] > 0.2 and was["events-bq"]["p50"] < 0.01  # the model's guesses
    for path in ("doc-written", "events-bq"):
        assert got[path]["p50"] == pytest.approx(want[path]["p50"], rel=0.15), path
        assert got[path]["p99"] == pytest.approx(want[path]["p99"], rel=0.25), path
    knobs = {f["path"]: f for f in fit.fitted}
    assert knobs["doc-written"]["target"] == "triggers.doc-written.delivery_latency"
    assert knobs["events-bq"]["target"] == "subscriptions.events-bq.write_latency"
    assert knobs["events-bq"]["p50"] == pytest.approx(0.300, rel=0.15)
    assert knobs["doc-written"]["p50"] == pytest.approx(0.020, rel=0.25)  # the truth, not Eventarc's 300 ms
    assert knobs["doc-written"]["p99"] == pytest.approx(0.080, rel=0.35)
    assert not any(u["path"].startswith("lag ") for u in fit.unfitted)
    overlay = tmp_path / "calibrated.yaml"
    overlay.write_text(yaml.safe_dump(fit.plan))
    plan = load_experiment(scenario, overlay).plan
    assert plan.triggers["doc-written"].delivery_latency.dist == "empirical"
    assert plan.subscription("events-bq").write_latency.dist == "empirical"


def test_the_environment_knobs_are_refused_where_they_mean_nothing(tmp_path: Path) -> None:
    from surgesim.schema import SchemaError

    (tmp_path / "s.yaml").write_text(DELAYS_SYSTEM.replace(
        "subscriptions:\n", "subscriptions:\n  - {name: fn-sub, topic: events, consumer: fn, delivery: push}\n"))
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({"name": "x", "system": "s.yaml", "duration": "1m", "traffic": {
        "sources": [{"name": "puts", "rate": 1, "request": {"service": "api", "route": "put"}}]}}))
    bad = {"name": "bad", "subscriptions": {"fn-sub": {"write_latency": "1s"}},
           "triggers": {"doc-writen": {"delivery_latency": "1s"}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(SchemaError) as err:
        load_experiment(tmp_path / "x.yaml", tmp_path / "bad.yaml")
    text = "\n".join(err.value.problems)
    assert "subscriptions.fn-sub.write_latency" in text and "delivers by push" in text
    assert "trigger 'doc-writen' is not in system" in text and "doc-written" in text  # did you mean
