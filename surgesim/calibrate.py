"""Calibration that closes the loop between the two engines: from a live run's measured
latencies, fit what the simulator's model lacks (the local stack's overhead per HTTP route
and per consumer) and write it as a plan overlay, so that `surgesim sim` with that plan
predicts the live run.

The fit: for each route both runs measured, the live run's latency minus the simulator's,
at p50 and at p99, becomes a log-normal `sleep` step appended to the route (a sleep holds
the slot waiting, as the local stack's I/O does); for each subscription with a consumer
that reads no other one, the same on its lag, appended to the consumer's handler steps.
Differences of quantiles are the quantiles of the overhead when the overhead dominates
the path (the usual case: a local stack is slower than production) or is near-constant;
the before/after error shows how well that held. What cannot be fitted is listed: paths
the live run is faster on, BigQuery subscriptions (no plan knob: the system's
`stores.bigquery_latency`), consumers reading several subscriptions, paths only one run
has."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from surgesim.reports.calibration import relative_error, rows
from surgesim.reports.metrics import LAG, LATENCY, RunData
from surgesim.rundir import load_run

MIN_OVERHEAD_S = 0.0005
"""Below half a millisecond the live run is as fast as the model: nothing to add."""


@dataclass
class Fit:
    plan: dict  # the overlay plan, YAML-ready
    fitted: list[dict] = field(default_factory=list)  # {what, path, p50, p99}
    unfitted: list[dict] = field(default_factory=list)  # {path, why}


def overhead(sim: dict, live: dict) -> dict | None:
    """A sleep's latency from the difference of two summaries' p50 and p99 (seconds)."""
    s50, s99, l50, l99 = (d.get(q) for d in (sim, live) for q in ("p50", "p99"))
    if None in (s50, s99, l50, l99):
        return None
    o50 = l50 - s50
    if o50 < MIN_OVERHEAD_S:
        return None
    o99 = l99 - s99
    if o99 <= o50 * 1.001:
        return {"p50": round(o50, 6)}
    return {"p50": round(o50, 6), "p99": round(o99, 6)}


def _dump(model) -> dict:
    return model.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def fit_overlay(exp: Any, sim: RunData, live: RunData) -> Fit:
    """The experiment's plan with the fitted overheads added (see the module's docstring)."""
    base = yaml.safe_load(Path(exp.plan_path).read_text()) if exp.plan_path else {}
    plan = dict(base or {})
    plan["name"] = f"{exp.plan.name}-calibrated"
    plan["description"] = f"{exp.plan.name} with the overheads fitted from live run {live.name} (surgesim calibrate)"
    services = {k: dict(v or {}) for k, v in (plan.get("services") or {}).items()}
    fit = Fit(plan)
    s_lat, l_lat = sim.path_summary(LATENCY), live.path_summary(LATENCY)
    routes_done: dict[str, list] = {}
    for path in sorted(set(s_lat) | set(l_lat)):
        svc, _, route = path.partition(".")
        if not route:
            continue  # a service's merged entry; its routes are fitted one by one
        if path not in s_lat or path not in l_lat:
            fit.unfitted.append({"path": f"latency {path}", "why": "measured by one run only"})
            continue
        o = overhead(s_lat[path], l_lat[path])
        if o is None:
            fit.unfitted.append({"path": f"latency {path}", "why": "live is not slower than the model"})
            continue
        routes = routes_done.setdefault(svc, [_dump(r) for r in exp.routes(svc)])
        for r in routes:
            if r["name"] == route:
                r["steps"] = list(r.get("steps", [])) + [{"sleep": o}]
        fit.fitted.append({"what": "route", "path": path, **o})
    for svc, routes in routes_done.items():
        services.setdefault(svc, {})["routes"] = routes
    s_lag, l_lag = sim.path_summary(LAG), live.path_summary(LAG)
    system = exp.system
    for sub_name in sorted(set(s_lag) | set(l_lag)):
        sub = next((s for s in system.subscriptions if s.name == sub_name), None)
        if sub is None or sub_name not in s_lag or sub_name not in l_lag:
            fit.unfitted.append({"path": f"lag {sub_name}", "why": "measured by one run only"})
            continue
        if sub.delivery == "bigquery" or sub.consumer is None:
            fit.unfitted.append({"path": f"lag {sub_name}",
                                 "why": "a BigQuery subscription: no plan knob (system stores.bigquery_latency)"})
            continue
        reads = [s.name for s in system.subscriptions if s.consumer == sub.consumer]
        if len(reads) > 1:
            fit.unfitted.append({"path": f"lag {sub_name}",
                                 "why": f"{sub.consumer} reads {len(reads)} subscriptions: one handler, several lags"})
            continue
        o = overhead(s_lag[sub_name], l_lag[sub_name])
        if o is None:
            fit.unfitted.append({"path": f"lag {sub_name}", "why": "live is not slower than the model"})
            continue
        steps = [_dump(s) for s in exp.steps(sub.consumer)] + [{"sleep": o}]
        services.setdefault(sub.consumer, {})["steps"] = steps
        fit.fitted.append({"what": "consumer", "path": sub_name, **o})
    if services:
        plan["services"] = services
    return fit


def median_error(sim: RunData, live: RunData) -> tuple[float | None, int]:
    """Median |relative error| over the calibration report's comparisons, and their number."""
    factor = sim.scales["rate_scale"] / live.scales["rate_scale"]
    errs = [abs(r["err"]) for r in rows(sim, live, factor) if r["err"] is not None]
    return (statistics.median(errs) if errs else None), len(errs)


def load(run_dir: str | Path) -> RunData:
    return RunData(load_run(run_dir))


__all__ = ["Fit", "fit_overlay", "median_error", "overhead", "relative_error", "load"]
