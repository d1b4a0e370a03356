"""SLO evaluation against a run directory, before summary.json is written.

An SLO is `FUNC(METRIC.ENTITY) OP VALUE` (surgesim.schema.Slo). Where the observed value
comes from:

    latency.SERVICE[.ROUTE]   histograms `latency/...` (every sample; a service merges its routes)
    lag.SUBSCRIPTION          histograms `lag/...`
        p50 p90 p95 p99 p999 max mean over all samples; total = number of samples

    backlog / oldest_unacked.SUBSCRIPTION, instances.SERVICE   gauges in timeseries
        pXX / max / mean over the windows' levels; final = the last window's level;
        total = sum of levels (rarely useful); drain (backlog only, below)

    freshness.COLLECTION      histograms `freshness/...`: age of the newest message a keyed
                              document shows, looked at every step (simulator)
        p50 .. max, mean, total as for latency
    wait.SERVICE[.CHANNEL]    histograms `wait/...`: queueing delay, arrival to start on a slot
                              (CHANNEL: a route, subscription or trigger; a service merges them)
        p50 .. max, mean, total as for latency
    pwait.SERVICE[.CHANNEL]   the same histograms: the fraction of arrivals that waited (bucket 0
                              holds the waits under 1 us); mean = over the whole run; max, pXX,
                              final over the histogram windows' fractions

    bigquery_job.SERVICE      histograms `bigquery_job/...`: the run time of each BigQuery job the
                              service's `bigquery: {op: job}` step inserted (jobs.insert -> DONE)
        p50 .. max, mean, total as for latency
    job.JOB                   jobs.json: the job's duration in scenario seconds (first execution's
                              start to last one's end); None unless every execution succeeded
    dlq.SUBSCRIPTION          dead_lettered counts of that subscription
    rejected / errors.SERVICE counts per window
        total, final and max = the cumulative count (so `max(dlq.x) == 0` reads naturally);
        mean and pXX over the per-window counts. No rows means no events: 0.

drain(backlog.SUB): how long the backlog was up. Its settle level is max(its level just before
the first fault or wave began (faults.json, or the scenario's own timeline when that file is
absent; 0 without any), 1% of its peak, 10 messages); drain is the time from when the backlog
first rose above that level to when it was back at or below it, interpolating linearly between
windows (the longest such excursion if there were several). When the fault or wave ended does
not enter: a backlog that drained while its fault was still on took what it took. 0 if the
backlog never rose above the level; one still above it at the end never drained: observed
None (reported as inf), and the SLO fails.

A metric with no data at all (no histogram samples, no gauge rows) observes None and
fails: an SLO on something that never happened is a mistake worth seeing.
"""

from __future__ import annotations

import math
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd

from surgesim.rundir import METRICS, Run
from surgesim.schema import Slo

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
COUNTS = {"dlq": "dead_lettered", "rejected": "rejected", "errors": "errors"}
GAUGES = {"backlog": "backlog", "oldest_unacked": "oldest_unacked", "instances": "instances"}
DRAIN_FLOOR = 10.0
DRAIN_PEAK_FRACTION = 0.01


def _series(run: Run, key: str, entity: str) -> pd.Series:
    try:
        ts = run.timeseries
    except FileNotFoundError:
        return pd.Series([], dtype="float64")
    rows = ts[(ts["metric"] == METRICS[key]) & (ts["entity"] == entity)].sort_values("time_s")
    return pd.Series(rows["value"].to_numpy(dtype=np.float64), index=rows["time_s"].to_numpy(dtype=np.float64))


def _step(index: np.ndarray, run: Run) -> float:
    """Window length: the smallest gap between windows of this run."""
    try:
        times = np.unique(run.timeseries["time_s"].to_numpy(dtype=np.float64))
    except FileNotFoundError:
        times = index
    gaps = np.diff(times)
    gaps = gaps[gaps > 0]
    return float(gaps.min()) if gaps.size else 1.0


def _histogram_value(run: Run, slo: Slo) -> float | None:
    hist = run.histogram(f"{slo.metric}/{slo.entity}")
    if hist.count == 0:
        return None
    if slo.func in PERCENTILES:
        return hist.percentile(PERCENTILES[slo.func])
    if slo.func == "max":
        return hist.max
    if slo.func == "mean":
        return hist.mean
    if slo.func == "total":
        return float(hist.count)
    return None  # final / drain make no sense for a distribution of samples


def _gauge_value(values: np.ndarray, func: str) -> float | None:
    if values.size == 0:
        return None
    if func in PERCENTILES:
        return float(np.percentile(values, PERCENTILES[func], method="higher"))
    return {"max": lambda: float(values.max()), "mean": lambda: float(values.mean()),
            "final": lambda: float(values[-1]), "total": lambda: float(values.sum())}.get(func, lambda: None)()


def _count_value(values: np.ndarray, func: str) -> float | None:
    if func in ("total", "final", "max"):
        return float(values.sum()) if values.size else 0.0
    if values.size == 0:
        return 0.0
    if func in PERCENTILES:
        return float(np.percentile(values, PERCENTILES[func], method="higher"))
    if func == "mean":
        return float(values.mean())
    return None


def disturbances(run: Run, scenario: Any) -> list[tuple[float, float]]:
    """(start_s, end_s) of every fault and wave; from faults.json, else from the scenario."""
    events: list[tuple[float, float]] = []
    if (run.dir / "faults.json").exists():
        for e in run.faults:
            start = float(e.get("start_s") or 0.0)
            end = e.get("end_s")
            if end is None:
                end = start if e.get("kind") == "poison_message" else float(scenario.duration)
            events.append((start, float(end)))
    else:
        for w in scenario.traffic.waves:
            events.append((w.at, w.at + w.duration))
        for f in scenario.faults:
            end = f.end
            if end is None:
                end = f.at if f.kind == "poison_message" else scenario.duration
            events.append((f.at, end))
    return sorted(events)


def drain_time(times: np.ndarray, values: np.ndarray, step: float, events: list[tuple[float, float]]) -> float:
    """Seconds the backlog spent above its settle level: from when it first rose above it (at
    or after the first disturbance began) to when it was back at or below it. With several
    excursions, the longest. 0 if it never rose; inf if it was still above at the end. When
    the disturbances ended does not enter: a backlog that drained while the fault was still on
    drained in the time it took, not in 0 s.

    settle = max(the level just before the first fault or wave, 1% of the peak, 10 messages);
    without any fault or wave, the level before is 0 from the run's start. `times` are window
    starts; a gauge value is the level at its window's end; crossings are interpolated
    linearly between window ends."""
    if values.size == 0:
        return math.inf
    ends = times + step
    peak = float(values.max())
    if events:
        first_start = min(s for s, _ in events)
        before = values[ends <= first_start + 1e-9]
        pre = float(before[-1]) if before.size else 0.0
    else:
        first_start, pre = float(times[0]), 0.0
    settle = max(pre, DRAIN_PEAK_FRACTION * peak, DRAIN_FLOOR)
    after = ends > first_start + 1e-9
    t = np.concatenate([[first_start], ends[after]])
    v = np.concatenate([[min(pre, settle)], values[after]])
    longest, rose = 0.0, None
    for i in range(1, t.size):
        if rose is None and v[i] > settle:
            rose = float(t[i - 1] + (settle - v[i - 1]) / (v[i] - v[i - 1]) * (t[i] - t[i - 1]))
        elif rose is not None and v[i] <= settle:
            back = float(t[i - 1] + (v[i - 1] - settle) / (v[i - 1] - v[i]) * (t[i] - t[i - 1]))
            longest = max(longest, back - rose)
            rose = None
    return math.inf if rose is not None else longest


def _pwait_value(run: Run, slo: Slo) -> float | None:
    """Fraction of arrivals that waited: over the run (mean, total) or per histogram window."""
    h = run.histograms
    path = f"wait/{slo.entity}"
    rows = h[run.path_rows(path)]
    if not len(rows):
        return None
    counts = rows["count"].to_numpy(dtype=np.float64)
    waited = np.where(rows["bucket"].to_numpy() == 0, 0.0, counts)
    if slo.func in ("mean", "total"):
        return float(waited.sum() / counts.sum())
    per = pd.DataFrame({"t": rows["time_s"].to_numpy(), "n": counts, "w": waited}).groupby("t", sort=True).sum()
    return _gauge_value((per["w"] / per["n"]).to_numpy(), slo.func)


def _job_value(run: Run, slo: Slo) -> float | None:
    """A job's duration (scenario s) whatever the function: one number per job and run."""
    job = run.jobs.get(slo.entity)
    if job is None or job.get("state") != "succeeded" or job.get("duration_s") is None:
        return None
    return float(job["duration_s"])


def observe(run: Run, scenario: Any, slo: Slo) -> float | None:
    """The observed value of one SLO; None when there is no data (or it never drained)."""
    if slo.metric == "job":
        return _job_value(run, slo)
    if slo.metric == "wait":
        return _histogram_value(run, slo)
    if slo.metric == "pwait":
        return _pwait_value(run, slo)
    if slo.metric in ("latency", "lag", "freshness", "bigquery_job"):
        return _histogram_value(run, slo)
    if slo.metric in COUNTS:
        return _count_value(_series(run, COUNTS[slo.metric], slo.entity).to_numpy(), slo.func)
    series = _series(run, GAUGES[slo.metric], slo.entity)
    if slo.func == "drain":
        if series.empty:
            return None
        t = series.index.to_numpy()
        value = drain_time(t, series.to_numpy(), _step(t, run), disturbances(run, scenario))
        return value if math.isfinite(value) else None
    return _gauge_value(series.to_numpy(), slo.func)


def evaluate(run: Run, scenario: Any) -> list[dict]:
    """[{text, observed, holds}] for each of scenario.slos, in order."""
    results = []
    for slo in scenario.slos:
        observed = observe(run, scenario, slo)
        holds = observed is not None and math.isfinite(observed) and slo.holds(observed)
        results.append({"text": slo.text, "observed": observed, "holds": bool(holds)})
    return results


def verdict(results: list[dict]) -> str:
    return "pass" if all(r["holds"] for r in results) else "fail"


def _show(value: float | None, slo: Slo | None) -> str:
    if value is None:
        return "inf" if slo is not None and slo.func == "drain" else "no data"
    timed = slo is not None and (slo.metric in ("latency", "lag", "oldest_unacked", "wait", "freshness", "bigquery_job")
                                 or slo.func == "drain")
    if timed:
        return f"{value * 1000:.4g}ms" if value < 1 else f"{value:.4g}s"
    return f"{value:.6g}"


def failure_message(result: dict) -> str:
    try:
        slo = Slo.model_validate(result["text"])
    except Exception:  # noqa: BLE001 -- a hand-made result: show what we have
        slo = None
    observed = _show(result["observed"], slo)
    want = f"{slo.op} {_show(slo.threshold, slo)}" if slo is not None else result["text"]
    return f"observed {observed}, required {want}"


def junit_xml(results: list[dict], suite_name: str, checks: list[dict] | None = None) -> str:
    """JUnit XML: one testcase per SLO, a <failure> with observed vs threshold when it fails;
    then one per implicit check (surgesim.checks), a <failure> with its detail when it fails."""
    checks = list(checks or [])
    tests = len(results) + len(checks)
    failures = sum(1 for r in results if not r["holds"]) + sum(1 for c in checks if not c["holds"])
    suite = ET.Element("testsuite", name=suite_name, tests=str(tests), failures=str(failures),
                       errors="0", skipped="0")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"{suite_name}.slo", name=r["text"])
        if not r["holds"]:
            msg = failure_message(r)
            fail = ET.SubElement(case, "failure", message=msg, type="SloViolation")
            fail.text = f"{r['text']}: {msg}"
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"{suite_name}.implicit", name=c["name"])
        out = f"{c['text']}: {c['detail']}"
        if not c["holds"]:
            fail = ET.SubElement(case, "failure", message=c["detail"], type="ImplicitCheckFailed")
            fail.text = out
        else:
            ET.SubElement(case, "system-out").text = out
    suites = ET.Element("testsuites", name=suite_name, tests=str(tests), failures=str(failures))
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


__all__ = ["disturbances", "drain_time", "evaluate", "failure_message", "junit_xml", "observe", "verdict"]
