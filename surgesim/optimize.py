"""Plan search: every plan a space describes, run in the simulator, judged on the
scenario's SLOs and implicit checks, priced by the cost model; the cheapest that passes
wins, with the margin of its tightest SLO, and a Pareto table of cost against p99.

A space file names, per service, the values each knob may take (any ServicePlan field,
plus `instances`: min_instances = max_instances = n, a fixed fleet), per subscription its
flow control, per API its quota:

    services:
      server: {instances: [3, 4, 5, 6]}
      billing: {max_instances: [10, 20, 30], concurrency: [40, 80]}
    subscriptions:
      telemetry-livemap: {max_outstanding_messages: [1000, 4000]}
    apis:
      billing-api: {rate_limit: [2000, 4000]}

Candidates are the cartesian product, applied on top of the scenario's plan; those the
plan's own validation rejects (min_instances > max_instances) are skipped. They run in a
process pool on the local cores (each run is one process: the simulator's own split is
off, it would compete for the same cores)."""

from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from surgesim.schema.plan import Plan

SECTIONS = ("services", "subscriptions", "apis")


def candidates(base: Plan, space: dict) -> tuple[list[tuple[dict, Plan]], int]:
    """(knob settings, plan) for every valid point of the space, and how many were invalid."""
    axes: list[tuple[str, str, str, list]] = []
    for section in SECTIONS:
        for name, knobs in (space.get(section) or {}).items():
            for knob, values in knobs.items():
                if not isinstance(values, list) or not values:
                    raise ValueError(f"space: {section}.{name}.{knob}: a non-empty list of values, got {values!r}")
                axes.append((section, name, knob, values))
    unknown = set(space) - set(SECTIONS)
    if unknown:
        raise ValueError(f"space: unknown section(s) {', '.join(sorted(unknown))}; one of {', '.join(SECTIONS)}")
    out, invalid = [], 0
    raw = base.model_dump(mode="json", exclude_none=True)
    for point in itertools.product(*(a[3] for a in axes)):
        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
        settings = {}
        for (section, name, knob, _), value in zip(axes, point):
            entry = dict((data.setdefault(section, {}) or {}).get(name) or {})
            if knob == "instances":
                entry["min_instances"] = entry["max_instances"] = value
            else:
                entry[knob] = value
            data[section] = {**data[section], name: entry}
            settings[f"{section}.{name}.{knob}"] = value
        try:
            plan = Plan.model_validate(data)
        except ValueError:
            invalid += 1
            continue
        out.append((settings, plan))
    return out, invalid


def _run_one(args: tuple) -> dict:
    exp, plan, seed, out_dir = args
    from surgesim.schema.loading import with_plan_quotas
    from surgesim.sim.engine import Engine
    from surgesim.sim.output import write_run

    exp = replace(exp, plan=plan, system=with_plan_quotas(exp.system, plan))
    eng = Engine(exp, seed=seed).run()
    summary = write_run(eng, out_dir, {"engine": "sim", "run_id": Path(out_dir).name})
    return summary


def margin(slo_results: list[dict]) -> float | None:
    """The tightest SLO's headroom: min over SLOs with a threshold of |threshold - observed| /
    |threshold| (0 when it just holds); None without a numeric SLO."""
    best = None
    for r in slo_results:
        from surgesim.schema import Slo

        slo = Slo.model_validate(r["text"])
        obs = r["observed"]
        if obs is None or not math.isfinite(obs) or slo.threshold == 0:
            continue
        m = abs(slo.threshold - obs) / abs(slo.threshold)
        best = m if best is None else min(best, m)
    return best


def p99_of(summary: dict) -> float | None:
    lat = summary.get("latency") or {}
    services = [k for k in lat if "." not in k] or list(lat)
    return max((lat[k].get("p99") or 0.0 for k in services), default=None) if lat else None


def search(exp: Any, space: dict, out_dir: Path, workers: int | None = None, seed: int | None = None) -> dict:
    cands, invalid = candidates(exp.plan, space)
    if not cands:
        raise ValueError("the space has no valid plan")
    seed = exp.scenario.seed if seed is None else seed
    workers = workers or os.cpu_count() or 1
    jobs = [(exp, plan, seed, out_dir / f"plan-{i:04d}") for i, (_, plan) in enumerate(cands)]
    if workers == 1:
        summaries = [_run_one(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            summaries = list(pool.map(_run_one, jobs))
    rows = []
    for i, ((settings, _), s) in enumerate(zip(cands, summaries)):
        rows.append({"plan": f"plan-{i:04d}", "settings": settings, "verdict": s["verdict"],
                     "cost_per_day": (s.get("cost") or {}).get("per_day", {}).get("total"),
                     "p99": p99_of(s), "margin": margin(s["slos"]),
                     "failed": [r["text"] for r in s["slos"] if not r["holds"]]
                     + [c["text"] for c in (s.get("checks") or []) if not c["holds"]]})
    passing = sorted((r for r in rows if r["verdict"] == "pass"), key=lambda r: (r["cost_per_day"], r["p99"] or 0))
    pareto, best_p99 = [], math.inf
    for r in sorted(rows, key=lambda r: (r["cost_per_day"], r["p99"] if r["p99"] is not None else math.inf)):
        if r["p99"] is not None and r["p99"] < best_p99:
            pareto.append(r)
            best_p99 = r["p99"]
    result = {"candidates": len(rows), "invalid": invalid, "workers": workers,
              "best": passing[0] if passing else None, "pareto": pareto, "rows": rows}
    if passing:
        best = passing[0]
        plan = next(p for (st, p) in cands if st == best["settings"])
        data = plan.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        data["name"] = f"{exp.plan.name}-optimized"
        (out_dir / "best-plan.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return result
