"""The simulator run as a live run runs: the scenario in wall time at the live scales.

A live run (`surgesim live`) compresses the scenario's clock by `time_scale` and sends
`rate_scale` of its volume, while every latency stays real: a handler, the emulators, a
fake API and a cold start take wall seconds (docs/live.md, "What this means for the
figures"). So the simulator predicts a live run only when it runs what the live run ran:

    wall time        the scenario's timeline (duration, waves, faults) / time_scale
    wall rate        every source's rate x rate_scale (per wall second, as the generators send)
    API quotas       x rate_scale (the live fakes' limits are scaled so)
    retry backoffs   / time_scale (the live bridges scale them so)
    latencies        as written: wall seconds in both

`wall_experiment` builds that experiment; `simulate_as_live` runs it and writes a run
directory back on the scenario's clock (time_s = wall x time_scale, as a live run records
it; scales set to the live ones), so `surgesim report SIM LIVE` compares like with like:
counts at the live volume, latencies in wall seconds, drain times in scenario seconds.

Daily curves are compressed with the timeline (the live generators read them at the
scenario's clock, `loadtests/plan.py`). What it cannot express, and refuses with a clear
error: curves over runs longer than a day, and
Cloud Run Jobs and one-off actions (their live volume is items x rate_scale / time_scale)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import platform
import time
from pathlib import Path
from typing import Any

from surgesim.rundir import RunWriter, load_run
from surgesim.schema import load_experiment


class NotAsLive(ValueError):
    """The scenario uses something a wall-time simulation cannot reproduce."""


def _scaled_retry(system: Any, time_scale: float) -> Any:
    from surgesim.live.runner import scaled_retry  # the live run's own rule, not a copy of it

    return scaled_retry(system, time_scale)


DAY = 86400.0


def compressed(curve: Any, start_clock: float, duration: float, ts: float) -> Any:
    """A daily curve as the wall-time run must read it: what the scenario sees at clock
    start + t, the wall-time run sees at start + t / time_scale (linear between the knots,
    so the compressed curve through the compressed knots is exact over the run)."""
    from surgesim.sim.traffic import CurveTable

    table = CurveTable(list(curve.points))
    knots = [start_clock, start_clock + duration]
    for day in (0.0, DAY):
        knots += [k + day for k in table.knots if start_clock < k + day < start_clock + duration]
    points = {}
    for c in sorted(set(knots)):
        points[(start_clock + (c - start_clock) / ts) % DAY] = float(table.at(c))
    return curve.model_copy(update={"points": sorted(points.items())})


def _per_day_as_rate(source: Any, curves: dict) -> Any:
    """A `per_day` source's rate is its volume spread by the curve's daily mean, which the
    compressed curve no longer has: the same rate, written as `rate` over the curve."""
    if source.per_day is None:
        return source
    from surgesim.sim.traffic import CurveTable

    mean = CurveTable(list(curves[source.curve].points)).mean if source.curve else 1.0
    return source.model_copy(update={"per_day": None, "rate": source.per_day / DAY / mean if mean > 0 else 0.0})


def _own_scale(source: Any, rs: float) -> Any:
    """A source with its own `rate_scale` is sent at that fraction live, not at the run's
    (which the traffic multiplier applies): its rate corrected by own / run."""
    if source.rate_scale is None or source.rate_scale == rs:
        return source
    k = source.rate_scale / rs
    if source.kind == "fleet":  # same vehicles, pinging k times as often
        return source.model_copy(update={"ping_interval": source.ping_interval / k})
    return source.model_copy(update={"rate": source.rate * k})


def wall_experiment(exp: Any, time_scale: float | None = None, rate_scale: float | None = None) -> Any:
    """`exp` as its live run runs it, in wall time (see the module's docstring); the scales
    default to the scenario's `live:` ones."""
    sc = exp.scenario
    ts = float(time_scale if time_scale is not None else sc.live.time_scale)
    rs = float(rate_scale if rate_scale is not None else sc.live.rate_scale)
    where = f"{exp.scenario_path.name}"
    problems = []
    if sc.traffic.curves and sc.duration > DAY:
        problems.append("traffic.curves: a daily curve over more than a day (compressed, its days would overlap)")
    problems += [f"traffic.sources.{s.name}: Cloud Run Jobs and one-off actions" for s in sc.traffic.sources
                 if s.job is not None or s.kind == "once"]
    if problems:
        raise NotAsLive(f"{where}: cannot simulate as the live run runs it: " + "; ".join(problems))
    waves = [w.model_copy(update={"at": w.at / ts, "duration": w.duration / ts, "ramp": w.ramp / ts})
             for w in sc.traffic.waves]
    faults = [f.model_copy(update={"at": f.at / ts, "duration": None if f.duration is None else f.duration / ts})
              for f in sc.faults]
    curves = {name: compressed(c, sc.start_clock, sc.duration, ts) for name, c in sc.traffic.curves.items()}
    sources = [_own_scale(_per_day_as_rate(s, sc.traffic.curves), rs) for s in sc.traffic.sources]
    traffic = sc.traffic.model_copy(update={"multiplier": sc.traffic.multiplier * rs, "waves": waves,
                                            "curves": curves, "sources": sources})
    duration = sc.duration / ts
    # one metric window per live sample (the live sampler's interval, in wall seconds)
    step = min(float(sc.live.sample_interval), duration)
    scenario = sc.model_copy(update={"duration": duration, "step": step, "traffic": traffic, "faults": faults})
    apis = [a.model_copy(update={k: getattr(a, k) * rs for k in ("rate_limit", "tokens_per_minute")
                                 if getattr(a, k, None) is not None})
            for a in exp.system.external_apis]
    system = _scaled_retry(exp.system, ts).model_copy(update={"external_apis": apis})
    return dataclasses.replace(exp, scenario=scenario, system=system)


def _to_scenario_clock(run_dir: Path, exp: Any, ts: float, rs: float) -> dict:
    """Rewrite a wall-time run directory on the scenario's clock (times x time_scale) and
    judge the scenario's own SLOs on it."""
    from surgesim.slo import evaluate
    from surgesim.checks import final_verdict

    run = load_run(run_dir)
    writer = RunWriter(run_dir)
    ts_frame = run.timeseries.copy()
    ts_frame["time_s"] = ts_frame["time_s"] * ts
    writer.write_timeseries(ts_frame)
    hist = run.histograms.copy()
    hist["time_s"] = hist["time_s"] * ts
    writer.write_histograms(hist)
    events = [dict(e, start_s=e["start_s"] * ts, end_s=None if e.get("end_s") is None else e["end_s"] * ts)
              for e in run.faults]
    writer.write_faults(events)
    summary = dict(run.summary)
    summary.pop("format", None)
    for k in ("duration_s", "step_s", "hist_window_s"):
        if summary.get(k) is not None:
            summary[k] = summary[k] * ts
    summary["scales"] = {"time_scale": ts, "rate_scale": rs}
    summary["as_live"] = {"time_scale": ts, "rate_scale": rs,
                          "note": "simulated in wall time at the live scales; times written x time_scale "
                                  "(surgesim/wallclock.py)"}
    slos = evaluate(load_run(run_dir), exp.scenario)  # reads the rewritten files
    summary["slos"] = slos
    summary["verdict"] = final_verdict(slos, summary.get("checks") or [])
    writer.write_summary(summary)
    return summary


def simulate_as_live(scenario: Path, plan: Path | None, out: Path, *, seed: int | None = None,
                     time_scale: float | None = None, rate_scale: float | None = None,
                     live_run: Path | None = None) -> tuple[dict, Path]:
    """Simulate `scenario` as its live run runs it (the scales of `live_run` if given, else
    the scenario's), per message (`--exact`: a live run's volume is small and its queues are
    what is compared), and write the run directory on the scenario's clock."""
    from surgesim.sim.engine import run as run_engine
    from surgesim.sim.output import write_run

    exp = load_experiment(scenario, plan)
    if live_run is not None:
        scales = load_run(live_run).summary.get("scales") or {}
        time_scale = time_scale if time_scale is not None else scales.get("time_scale")
        rate_scale = rate_scale if rate_scale is not None else scales.get("rate_scale")
    ts = float(time_scale if time_scale is not None else exp.scenario.live.time_scale)
    rs = float(rate_scale if rate_scale is not None else exp.scenario.live.rate_scale)
    wall = wall_experiment(exp, ts, rs)
    seed = exp.scenario.seed if seed is None else seed
    began = time.time()
    eng = run_engine(wall, seed=seed, exact=True, guard={"clock": time.monotonic})
    meta = {"run_id": Path(out).name, "wall_start": dt.datetime.fromtimestamp(began).isoformat(timespec="seconds"),
            "wall_seconds": round(time.time() - began, 3), "host": platform.node(),
            "python": platform.python_version(), "engine": "sim (as live)"}
    write_run(eng, out, meta)
    return _to_scenario_clock(Path(out), exp, ts, rs), Path(out)


__all__ = ["NotAsLive", "simulate_as_live", "wall_experiment"]
