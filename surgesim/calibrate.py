"""Calibration that closes the loop between the two engines: from a live run's measured
latencies, fit what the simulator's model lacks (the local stack's cost per HTTP route
and per consumer: the emulators' operations, the fronts, the bridges, the machine's
load) and write it as a plan overlay, so that the simulator, run as the live run ran
(surgesim/wallclock.py: wall time, live volume), predicts the live run.

The fit, per path both runs measured, on a grid of quantiles q (0.5%, 1.5%, ... 99.5%):

    overhead_0(q) = 0
    overhead_k+1(q) = max(0, overhead_k(q) + live(q) - sim_k(q)), sorted

with live(q) over every sample of the path in the live runs given (one, or several runs of
the scenario pooled: more samples, and more than one run's stalls in the tail).

where sim_k is the simulator run with overhead_k; each overhead is written as an
empirical `sleep` step (`{dist: empirical, samples: [...]}`, the measured shape, not a
two-point log-normal) appended to the route, or to the handler of the subscription's
consumer (for lag). A sleep holds the slot waiting, as the local stack's I/O does, so the
queueing it causes (push windows, instance slots, flow control) is the simulator's own.
A few rounds (default 3) absorb what the first misses (an overhead that moves queueing);
the round with the lowest median |relative error| is kept.

Two paths are delays, not handler work, and are fitted as the plan's environment figures
(simulator only; docs/calibration.md): a BigQuery subscription's lag as its
`subscriptions.<sub>.write_latency` (the same iteration from 0), and a Firestore or
Storage trigger's lag as its `triggers.<trigger>.delivery_latency`, which *replaces* the
system file's assumed Eventarc figure: the iteration starts from that figure's quantiles
(overhead_0 = the assumed delivery latency), so a local bridge faster than the
assumption comes out faster.

What cannot be fitted is listed with why: consumers reading several subscriptions (one
handler, several lags), paths the live run is not slower on, paths only one run has. Backlog peaks and drain times are not fitted: they follow (or not) from
the fitted latencies and the model's queues, and are compared as predictions."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from surgesim.histogram import Histogram
from surgesim.reports.calibration import median_error as table_median
from surgesim.reports.calibration import relative_error, rows
from surgesim.reports.metrics import LAG, LATENCY, RunData
from surgesim.rundir import load_run
from surgesim.sim.core import sample
from surgesim.sim.triggers import delivery_latency

GRID = np.linspace(0.5, 99.5, 100)
"""Quantiles (percent) the overhead is fitted at: one sample per percent of the distribution."""
MIN_OVERHEAD_S = 0.0005
"""An overhead whose mean is below half a millisecond is nothing to add. The mean, not the
median: a path whose p50 matches the model but whose tail is slower live (a route stalled
by the machine now and then) has an overhead of zeros and a tail, which the fit keeps."""
ROUNDS = 3


@dataclass
class Fit:
    plan: dict  # the overlay plan, YAML-ready
    fitted: list[dict] = field(default_factory=list)  # {what, path, target, p50, p99}
    unfitted: list[dict] = field(default_factory=list)  # {path, why}
    overheads: dict[str, np.ndarray] = field(default_factory=dict)  # path key -> sorted samples (s)
    rounds: list[dict] = field(default_factory=list)  # {round, median, comparisons}

    def record(self) -> dict:
        """What the calibration report shows about the fit (JSON-ready)."""
        return {"fitted": self.fitted, "unfitted": self.unfitted, "rounds": self.rounds}


def quantiles(h: Histogram) -> np.ndarray | None:
    if h.count == 0:
        return None
    return np.array([h.percentile(q) for q in GRID])


def step_overhead(previous: np.ndarray | None, sim_q: np.ndarray, live_q: np.ndarray) -> np.ndarray:
    """One round of the fit: the previous overhead plus what the simulator still misses,
    quantile by quantile, never negative, sorted (a distribution's quantiles increase)."""
    base = np.zeros_like(live_q) if previous is None else previous
    return np.sort(np.maximum(0.0, base + live_q - sim_q))


def _dump(model) -> dict:
    return model.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def _sleep(samples: np.ndarray) -> dict:
    return {"sleep": {"dist": "empirical", "samples": [round(float(v), 6) for v in samples]}}


@dataclass
class Target:
    """A path the fit can change: its measured kind/path, and where its fitted delay goes."""

    key: str  # "latency svc.route" | "lag sub"
    kind: str  # LATENCY | LAG
    path: str
    service: str | None
    route: str | None  # None: the service's message handler
    knob: str = "sleep"  # "sleep": a step of the route or handler; "write_latency" / "delivery_latency": the plan's
    start: np.ndarray | None = None  # the model's own delay at GRID, where the fit replaces it (a trigger's)


def targets(exp: Any, sim: RunData, live: RunData) -> tuple[list[Target], list[dict]]:
    """The paths the fit adjusts, and the ones it cannot (with why)."""
    out, unfitted = [], []
    s_lat, l_lat = sim.path_summary(LATENCY), live.path_summary(LATENCY)
    for path in sorted(set(s_lat) | set(l_lat)):
        svc, _, route = path.partition(".")
        if not route:
            continue  # a service's merged entry; its routes are fitted one by one
        if path not in s_lat or path not in l_lat:
            unfitted.append({"path": f"latency {path}", "why": "measured by one run only"})
            continue
        out.append(Target(f"latency {path}", LATENCY, path, svc, route))
    s_lag, l_lag = sim.path_summary(LAG), live.path_summary(LAG)
    system = exp.system
    for sub_name in sorted(set(s_lag) | set(l_lag)):
        sub = next((s for s in system.subscriptions if s.name == sub_name), None)
        trig = next((t for t in system.triggers if t.name == sub_name and t.kind != "pubsub"), None)
        if (sub is None and trig is None) or sub_name not in s_lag or sub_name not in l_lag:
            unfitted.append({"path": f"lag {sub_name}", "why": "measured by one run only"})
            continue
        if trig is not None:
            tp = exp.plan.triggers.get(trig.name)
            now = tp.delivery_latency if tp is not None else delivery_latency(trig)
            start = np.percentile(sample(now, 20_000, np.random.default_rng(0)), GRID)
            out.append(Target(f"lag {sub_name}", LAG, sub_name, None, None, "delivery_latency", start))
            continue
        if sub.delivery == "bigquery":
            out.append(Target(f"lag {sub_name}", LAG, sub_name, None, None, "write_latency"))
            continue
        if sub.consumer is None:
            unfitted.append({"path": f"lag {sub_name}", "why": "no consumer: nothing handles it"})
            continue
        reads = [s.name for s in system.subscriptions if s.consumer == sub.consumer]
        if len(reads) > 1:
            unfitted.append({"path": f"lag {sub_name}",
                             "why": f"{sub.consumer} reads {len(reads)} subscriptions: one handler, several lags"})
            continue
        out.append(Target(f"lag {sub_name}", LAG, sub_name, sub.consumer, None))
    return out, unfitted


def overlay_plan(exp: Any, live_name: str, overheads: dict[str, np.ndarray], tgts: list[Target]) -> tuple[dict, list[dict]]:
    """The experiment's plan with one empirical sleep per fitted target."""
    base = yaml.safe_load(Path(exp.plan_path).read_text()) if exp.plan_path else {}
    plan = dict(base or {})
    plan["name"] = f"{exp.plan.name}-calibrated"
    plan["description"] = (f"{exp.plan.name} with the local stack's overheads fitted from live run {live_name} "
                           "(surgesim calibrate; simulate it with `surgesim sim --as-live`)")
    services = {k: dict(v or {}) for k, v in (plan.get("services") or {}).items()}
    routes: dict[str, list[dict]] = {}
    fitted = []
    subs = {k: dict(v or {}) for k, v in (plan.get("subscriptions") or {}).items()}
    triggers = {k: dict(v or {}) for k, v in (plan.get("triggers") or {}).items()}
    for t in tgts:
        o = overheads.get(t.key)
        if o is None:
            continue
        if t.knob == "write_latency":
            subs.setdefault(t.path, {})["write_latency"] = _sleep(o)["sleep"]
            where = f"subscriptions.{t.path}.write_latency"
        elif t.knob == "delivery_latency":
            triggers.setdefault(t.path, {})["delivery_latency"] = _sleep(o)["sleep"]
            where = f"triggers.{t.path}.delivery_latency"
        elif t.route is not None:
            rs = routes.setdefault(t.service, [_dump(r) for r in exp.routes(t.service)])
            for r in rs:
                if r["name"] == t.route:
                    r["steps"] = list(r.get("steps", [])) + [_sleep(o)]
            where = f"route {t.service}.{t.route}"
        else:
            steps = [_dump(s) for s in exp.steps(t.service)] + [_sleep(o)]
            services.setdefault(t.service, {})["steps"] = steps
            where = f"handler of {t.service}"
        what = "route" if t.route else "consumer" if t.knob == "sleep" else t.knob
        fitted.append({"what": what, "path": t.path, "target": where,
                       "p50": round(float(np.percentile(o, 50)), 6), "p99": round(float(np.percentile(o, 99)), 6)})
    for svc, rs in routes.items():
        services.setdefault(svc, {})["routes"] = rs
    if services:
        plan["services"] = services
    if subs:
        plan["subscriptions"] = subs
    if triggers:
        plan["triggers"] = triggers
    return plan, fitted


def pooled(runs: list[RunData], path: str) -> Histogram:
    """Every sample of `path` in all the runs (several live runs of one scenario: more
    samples, and the tail of more than one run's stalls)."""
    h = Histogram()
    for r in runs:
        h.merge(r.run.histogram(path))
    return h


def fit_round(tgts: list[Target], sim: RunData, live: RunData | list[RunData],
              previous: dict[str, np.ndarray]) -> tuple[dict, list[dict]]:
    """Each target's overhead after one more round; the targets dropped, with why."""
    lives = live if isinstance(live, list) else [live]
    out, dropped = {}, []
    for t in tgts:
        s_q = quantiles(sim.run.histogram(f"{t.kind}/{t.path}"))
        l_q = quantiles(pooled(lives, f"{t.kind}/{t.path}"))
        if s_q is None or l_q is None:
            dropped.append({"path": t.key, "why": "no samples in one of the runs"})
            continue
        o = step_overhead(previous.get(t.key, t.start), s_q, l_q)
        if t.start is None and float(o.mean()) < MIN_OVERHEAD_S:
            if t.key not in previous:
                dropped.append({"path": t.key, "why": "live is not slower than the model"})
                continue
        out[t.key] = o
    return out, dropped


def mean_median_error(sim: RunData, lives: list[RunData]) -> tuple[float | None, int]:
    """The median |relative error| against each live run, averaged (one run: its own)."""
    got = [median_error(sim, live) for live in lives]
    ms = [m for m, _ in got if m is not None]
    return (statistics.fmean(ms) if ms else None), min(n for _, n in got)


def calibrate(exp: Any, live: RunData | list[RunData], simulate: Callable[[dict | None, int], RunData],
              rounds: int = ROUNDS) -> tuple[Fit, RunData, RunData]:
    """Fit `exp` to `live` (one live run of its scenario, or several pooled).
    `simulate(plan_dict_or_None, round)` runs the simulator as the live run ran (with the
    experiment's own plan for None) and returns its run. Returns the best round's fit
    (the lowest median |relative error|, averaged over the live runs), the first
    simulation (before) and the best one (after)."""
    lives = live if isinstance(live, list) else [live]
    before = simulate(None, 0)
    tgts, unfitted = targets(exp, before, lives[0])
    b, n = mean_median_error(before, lives)
    best: tuple[float, Fit, RunData] | None = None
    history = [{"round": 0, "median": b, "comparisons": n}]
    sim, overheads = before, {}
    names = ", ".join(r.name for r in lives)
    for k in range(1, rounds + 1):
        overheads, dropped = fit_round(tgts, sim, lives, overheads)
        plan, fitted = overlay_plan(exp, names, overheads, tgts)
        sim = simulate(plan, k)
        m, c = mean_median_error(sim, lives)
        history.append({"round": k, "median": m, "comparisons": c})
        fit = Fit(plan, fitted, unfitted + dropped, dict(overheads))
        if m is not None and (best is None or m < best[0]):
            best = (m, fit, sim)
    assert best is not None, "the simulator produced no comparable numbers"
    best[1].rounds = history
    return best[1], before, best[2]


def median_error(sim: RunData, live: RunData) -> tuple[float | None, int]:
    """Median |relative error| over the calibration report's comparisons (one-sided misses
    counted as worse than any bound, as the report counts them), and their number."""
    factor = sim.scales["rate_scale"] / live.scales["rate_scale"]
    return table_median(rows(sim, live, factor))


def load(run_dir: str | Path) -> RunData:
    return RunData(load_run(run_dir))


__all__ = ["Fit", "GRID", "calibrate", "fit_round", "median_error", "overlay_plan", "quantiles", "relative_error",
           "step_overhead", "targets", "load"]
