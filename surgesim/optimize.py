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
off, it would compete for the same cores), or on a Dask cluster given its scheduler's
address (the `dask` extra): each candidate is one task, so a worker should run one task
at a time per core (`dask worker ADDR --nworkers N --nthreads 1`: the simulator is pure
Python and holds the GIL)."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
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


Progress = Callable[[int, int, int, dict], None]
"""progress(done, total, index, summary): called as each candidate's run finishes."""

DASK_MISSING = ("--dask needs the `distributed` library: pip install 'surgesim[dask]' "
                "(on the workers too)")


def run_local(jobs: Sequence[tuple], workers: int, progress: Progress | None = None) -> list[dict]:
    """Every job's summary, in job order, from a pool of `workers` processes."""
    out: list[dict | None] = [None] * len(jobs)
    if workers == 1:
        for i, job in enumerate(jobs):
            out[i] = _run_one(job)
            if progress:
                progress(i + 1, len(jobs), i, out[i])
        return out  # type: ignore[return-value]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_one, job): i for i, job in enumerate(jobs)}
        for done, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            out[i] = fut.result()
            if progress:
                progress(done, len(jobs), i, out[i])
    return out  # type: ignore[return-value]


def dask_client(address: str) -> Any:
    """A client of the Dask scheduler at `address` (tcp://HOST:PORT); a clear error when the
    `dask` extra is not installed or nobody answers."""
    try:
        from distributed import Client
    except ImportError:
        raise RuntimeError(DASK_MISSING) from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise RuntimeError(f"--dask {address}: no Dask scheduler answered ({e})") from None


def run_dask(jobs: Sequence[tuple], address: str, progress: Progress | None = None) -> tuple[list[dict], int]:
    """Every job's summary, in job order, each job one task on the Dask cluster at `address`;
    and the cluster's task slots (threads over all workers) when it started."""
    client = dask_client(address)  # first: it explains a missing `distributed`
    from distributed import as_completed as dask_completed

    try:
        slots = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        # pure=False: two candidates never share a result, even if their inputs hash alike
        futures = client.map(_run_one, list(jobs), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[dict | None] = [None] * len(jobs)
        for done, fut in enumerate(dask_completed(futures), 1):
            i = index[fut.key]
            out[i] = fut.result()
            if progress:
                progress(done, len(jobs), i, out[i])
        return out, slots  # type: ignore[return-value]
    finally:
        client.close()


def search(exp: Any, space: dict, out_dir: Path, workers: int | None = None, seed: int | None = None,
           dask: str | None = None, progress: Progress | None = None) -> dict:
    """Run every candidate of `space`; `dask` (a scheduler address) runs them on that cluster
    instead of a local process pool of `workers` (default: every core)."""
    cands, invalid = candidates(exp.plan, space)
    if not cands:
        raise ValueError("the space has no valid plan")
    seed = exp.scenario.seed if seed is None else seed
    jobs = [(exp, plan, seed, out_dir / f"plan-{i:04d}") for i, (_, plan) in enumerate(cands)]
    t0 = time.monotonic()
    if dask:
        summaries, workers = run_dask(jobs, dask, progress)
    else:
        workers = workers or os.cpu_count() or 1
        summaries = run_local(jobs, workers, progress)
    wall_s = time.monotonic() - t0
    rows = []
    for i, ((settings, _), s) in enumerate(zip(cands, summaries)):
        rows.append({"plan": f"plan-{i:04d}", "settings": settings, "verdict": s["verdict"],
                     "cost_per_day": (s.get("cost") or {}).get("per_day", {}).get("total"),
                     "p99": p99_of(s), "margin": margin(s["slos"]),
                     "failed": [r["text"] for r in s["slos"] if not r["holds"]]
                     + [c["text"] for c in (s.get("checks") or []) if not c["holds"]]})
    passing = sorted((r for r in rows if r["verdict"] == "pass"), key=lambda r: (r["cost_per_day"], r["p99"] or 0))
    # the choice is among plans that meet every SLO: a failing plan that is cheaper at the same
    # p99 (one whose billing lag fails, say) is no option, and it would hide the passing one
    pareto, best_p99 = [], math.inf
    for r in passing:
        if r["p99"] is not None and r["p99"] < best_p99:
            pareto.append(r)
            best_p99 = r["p99"]
    best = passing[0] if passing else None
    result = {"candidates": len(rows), "invalid": invalid, "workers": workers, "backend": dask or "local",
              "wall_s": round(wall_s, 1), "best": best, "pareto": pareto, "rows": rows}
    if best is not None:
        plan = next(p for (st, p) in cands if st == best["settings"])
        data = plan.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        data["name"] = f"{exp.plan.name}-optimized"
        (out_dir / "best-plan.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return result
