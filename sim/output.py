"""Writing a finished simulation as a run directory (docs/run-directory.md): time series,
histograms and the fault timeline first, then the SLO verdicts (surgesim.slo reads those
files) and the implicit checks (surgesim.checks), then summary.json. Deterministic for a seed: no wall clock, no absolute paths."""

from __future__ import annotations

import hashlib
from pathlib import Path

from surgesim.rundir import Run, RunWriter


def _input(path: Path | None) -> dict | None:
    if path is None:
        return None
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def cost_of(totals: dict, duration_s: float, system) -> dict:
    """The other half of the team's cost model; {} when it is not there."""
    try:
        from surgesim.sim.cost import estimate_cost
    except ImportError:
        return {}
    return estimate_cost(totals, duration_s, system=system)


def evaluate_slos(run_dir: Path, scenario) -> list[dict]:
    from surgesim.slo import evaluate

    return evaluate(Run(Path(run_dir)), scenario)


def _split_of(eng) -> dict | None:
    cut = getattr(eng, "cut", None)
    if cut is None:
        return None
    return {"upstream_services": sorted(cut.services), "upstream_topics": sorted(cut.topics),
            "handed_over": sorted(cut.exports)}


def write_run(eng, out_dir: str | Path, meta: dict | None = None) -> dict:
    """Write the run directory for a finished Engine; returns the summary dict."""
    exp, sc = eng.exp, eng.scenario
    writer = RunWriter(out_dir)
    m = eng.metrics
    writer.write_timeseries(m.timeseries_frame())
    writer.write_histograms(m.histogram_frame())
    writer.write_faults(eng.fault_events())
    writer.write_jobs({k: j.record() for k, j in eng.jobs.items() if j.started})
    totals = eng.totals()
    latency, lag = eng.latency_summaries()
    slos = evaluate_slos(writer.dir, sc)
    summary = {
        "mode": "sim",
        "scenario": sc.name,
        "system": eng.system.name,
        "plan": exp.plan.name,
        "seed": eng.seed,
        "duration_s": eng.duration,
        "start_clock_s": sc.start_clock,
        "step_s": eng.step,
        "hist_window_s": m.hist_window,
        "engine": {"exact": eng.exact, "exact_below": eng.exact_below, "split": _split_of(eng),
                   "queue": "fcfs", "nodes": eng.queue_stats()},
        "scales": {"time_scale": 1.0, "rate_scale": 1.0},
        "inputs": {"scenario": _input(exp.scenario_path), "system": _input(exp.system_path), "plan": _input(exp.plan_path)},
        "totals": totals,
        "latency": latency,
        "lag": lag,
        "wait": eng.wait_summaries(),
        "freshness": eng.freshness_summaries(),
        "slos": slos,
        "conservation": eng.conservation(totals),
        "cost": cost_of(totals, eng.duration, eng.system),
    }
    from surgesim.checks import final_verdict, implicit_checks

    summary["checks"] = implicit_checks(summary, sc, eng.system, faults=eng.fault_events())
    summary["verdict"] = final_verdict(slos, summary["checks"])
    writer.write_summary(summary)
    if meta is not None:
        writer.write_meta(meta)
    return summary
