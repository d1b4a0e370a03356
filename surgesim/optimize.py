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
    exp, plan, seed, out_dir = args[:4]
    split = args[4] if len(args) > 4 else False
    from surgesim.schema.loading import with_plan_quotas
    from surgesim.sim.output import write_run
    from surgesim.sim.split import run_experiment

    exp = replace(exp, plan=plan, system=with_plan_quotas(exp.system, plan))
    eng = run_experiment(exp, seed=seed, split=split)
    summary = write_run(eng, out_dir, {"engine": "sim", "run_id": Path(out_dir).name})
    return summary


def window(exp: Any, spec: str) -> Any:
    """The experiment cut to the clock window `spec` ('07:00-08:00'): the scenario starts at
    the window's start and lasts to its end; waves, faults and one-off sources keep their
    clock times. Refused unless every one of them lies wholly inside the window (a fault
    without a duration lasts to the run's end: the window must reach it too), so what is cut
    is steady diurnal traffic only. The cut run starts empty, at min instances: the window
    should open some minutes before the first wave (warm-up) and close after its drain."""
    from surgesim.schema.common import parse_clock

    sc = exp.scenario
    try:
        a, b = (parse_clock(x.strip()) for x in spec.split("-"))
    except ValueError as e:
        raise ValueError(f"--window {spec!r}: START-END in clock times, e.g. 07:00-08:00 ({e})") from None
    start, end = sc.start_clock, sc.start_clock + sc.duration
    a += 86400 * (a < start)  # a window past midnight of a run that started the day before
    b += 86400 * (b < a)
    if not (start <= a < b <= end):
        raise ValueError(f"--window {spec}: not inside the scenario's {_clock(start)}-{_clock(end)}")
    off = a - start

    def inside(what: str, at: float, until: float | None) -> None:
        until = end - start if until is None else until
        if not (off <= at and start + until <= b):
            raise ValueError(f"--window {spec}: {what} ({_clock(start + at)}-{_clock(start + until)}) "
                             "is not inside the window; widen it")

    waves = []
    for w in sc.traffic.waves:
        inside(f"wave {w.name}", w.at, w.at + w.duration)
        waves.append(w.model_copy(update={"at": w.at - off}))
    faults = []
    for i, f in enumerate(sc.faults):
        inside(f"fault {i + 1} ({f.kind})", f.at, f.end)
        faults.append(f.model_copy(update={"at": f.at - off}))
    sources = []
    for src in sc.traffic.sources:
        if src.at is not None:
            inside(f"source {src.name}", src.at, src.at)
            src = src.model_copy(update={"at": src.at - off})
        sources.append(src)
    traffic = sc.traffic.model_copy(update={"waves": waves, "sources": sources})
    cut = sc.model_copy(update={"start_clock": a, "duration": b - a, "traffic": traffic, "faults": faults})
    return replace(exp, scenario=cut)


def _clock(seconds: float) -> str:
    s = int(round(seconds)) % 86400
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}" + (f":{s % 60:02d}" if s % 60 else "")


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
           dask: str | None = None, progress: Progress | None = None, full: Any = None,
           confirm_tries: int = 3) -> dict:
    """Run every candidate of `space`; `dask` (a scheduler address) runs them on that cluster
    instead of a local process pool of `workers` (default: every core).

    `full`: the whole experiment when `exp` is a window of it (window()): the passing plans
    are then run on `full`, cheapest first, until one passes there too (at most
    `confirm_tries`); that one is the answer, and `confirmed` says what each try gave."""
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
    pareto, best_p99 = [], math.inf
    for r in sorted(rows, key=lambda r: (r["cost_per_day"], r["p99"] if r["p99"] is not None else math.inf)):
        if r["p99"] is not None and r["p99"] < best_p99:
            pareto.append(r)
            best_p99 = r["p99"]
    best = passing[0] if passing else None
    confirmed: list[dict] = []
    if full is not None and passing:
        best = None
        for r in passing[:confirm_tries]:
            t1 = time.monotonic()
            plan = next(p for (st, p) in cands if st == r["settings"])
            s = _run_one((full, plan, seed, out_dir / f"{r['plan']}-full", True))
            confirmed.append({"plan": r["plan"], "verdict": s["verdict"], "wall_s": round(time.monotonic() - t1, 1),
                              "cost_per_day": (s.get("cost") or {}).get("per_day", {}).get("total"),
                              "p99": p99_of(s), "margin": margin(s["slos"]),
                              "failed": [x["text"] for x in s["slos"] if not x["holds"]]
                              + [c["text"] for c in (s.get("checks") or []) if not c["holds"]]})
            if s["verdict"] == "pass":
                best = {**r, "full": confirmed[-1]}
                break
    result = {"candidates": len(rows), "invalid": invalid, "workers": workers, "backend": dask or "local",
              "wall_s": round(wall_s, 1), "window": None if full is None else
              {"start_clock_s": exp.scenario.start_clock, "duration_s": exp.scenario.duration},
              "best": best, "confirmed": confirmed if full is not None else None, "pareto": pareto, "rows": rows}
    if best is not None:
        plan = next(p for (st, p) in cands if st == best["settings"])
        data = plan.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        data["name"] = f"{exp.plan.name}-optimized"
        (out_dir / "best-plan.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return result
