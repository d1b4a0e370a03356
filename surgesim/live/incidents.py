"""The figures that say whether a run shows its incident, read from a run directory (live or
simulated, the same format), for every route and subscription the run measured, whatever
the system: peak and final backlog with the drain time, dead letters, request latency and
lag before / during / after the disturbances (their whole span, and each wave and each
fault on its own), publish rates per topic, conservation.

    python -m surgesim.live.incidents RUN_DIR [RUN_DIR ...]     # a JSON object per run

Used by docs/benchmarks/live.md (the figures quoted there) and by the live incident tests.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from surgesim.histogram import N_BUCKETS, Histogram, bucket_value
from surgesim.rundir import METRICS, Run, load_run
from surgesim.slo import disturbances, drain_time, _step  # noqa: PLC2701 -- the same drain rule as the SLOs

def _ms(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x * 1000.0, 1)


class _Histograms:
    """The run's histogram rows split by path once: figures cut every path into several
    windows, and filtering the whole frame for each cut took seconds per run."""

    def __init__(self, run: Run) -> None:
        frame = run.histograms
        self._rows = {path: (g["time_s"].to_numpy(dtype=float), g["bucket"].to_numpy(), g["count"].to_numpy())
                      for path, g in frame.groupby("path", sort=False)}

    def get(self, path: str, start: float | None = None, end: float | None = None) -> Histogram:
        """As Run.histogram: `path` and its dotted sub-paths, samples in [start, end)."""
        hist = Histogram()
        for p, (t, b, c) in self._rows.items():
            if p != path and not p.startswith(path + "."):
                continue
            sel = np.ones(t.size, dtype=bool)
            if start is not None:
                sel &= t >= start
            if end is not None:
                sel &= t < end
            if sel.any():
                part = Histogram()
                part.counts = np.bincount(b[sel], weights=c[sel], minlength=N_BUCKETS).astype(np.int64)
                part.count = int(part.counts.sum())
                nz = np.nonzero(part.counts)[0]
                values = bucket_value(nz)
                part.total = float((values * part.counts[nz]).sum())
                part.min, part.max = float(values.min()), float(values.max())
                hist.merge(part)
        return hist


def _hist(hs: _Histograms, path: str, start: float | None = None, end: float | None = None) -> dict:
    h = hs.get(path, start, end)
    if h.count == 0:
        return {"n": 0}
    return {"n": int(h.count), "p50_ms": _ms(h.percentile(50)), "p99_ms": _ms(h.percentile(99)), "max_ms": _ms(h.max)}


def window(run: Run) -> tuple[float, float] | None:
    """(first start, last end) of the faults and waves, in scenario seconds."""
    events = disturbances(run, _ScenarioView(run))
    if not events:
        return None
    return min(s for s, _ in events), max(e for _, e in events)


class _ScenarioView:
    """What surgesim.slo.disturbances needs when faults.json is present (always, in runs)."""

    def __init__(self, run: Run) -> None:
        self.duration = float(run.summary.get("duration_s") or 0.0)


def backlog(run: Run, sub: str) -> dict:
    s = run.series(METRICS["backlog"], sub)
    if s.empty:
        return {"observed": False}
    t, v = s.index.to_numpy(dtype=float), s.to_numpy(dtype=float)
    drain = drain_time(t, v, _step(t, run), disturbances(run, _ScenarioView(run)))
    peak_i = int(v.argmax())
    return {"peak": float(v.max()), "peak_at_s": float(t[peak_i]), "final": float(v[-1]),
            "drain_s": drain if math.isfinite(drain) else None}


def counts(run: Run, key: str, entity: str) -> float:
    s = run.series(METRICS[key], entity)
    return float(s.sum()) if not s.empty else 0.0


def _entities(run: Run, metric: str) -> list[str]:
    """Every entity the run has a `metric` series for."""
    ts = run.timeseries
    return sorted(ts.loc[ts["metric"] == METRICS[metric], "entity"].unique().tolist())


def _phases(hs: _Histograms, path: str, start: float, end: float) -> dict:
    """One histogram path before / during / after [start, end), and outside it."""
    return {"before": _hist(hs, path, None, start), "during": _hist(hs, path, start, end),
            "after": _hist(hs, path, end, None), "outside": _merge_outside(hs, path, (start, end))}


def figures(run_dir: str | Path) -> dict:
    """Every route and subscription of whatever system ran: request latency (`latency/SVC.ROUTE`)
    and lag (`lag/SUB`) over the whole run, before / during / after the span of all
    disturbances, and before / during / after each wave and each fault on its own."""
    run = load_run(run_dir)
    hs = _Histograms(run)
    summ = run.summary
    w = window(run)
    out: dict = {"mode": summ.get("mode"), "scenario": summ.get("scenario"), "verdict": summ.get("verdict"),
                 "scales": summ.get("scales"), "window_s": list(w) if w else None,
                 "slos": [{"text": s["text"], "observed": s["observed"], "holds": s["holds"]} for s in summ.get("slos", [])]}
    totals = summ.get("totals") or {}
    routes = run.paths("latency")
    subs = sorted(set(run.paths("lag")) | set(_entities(run, "backlog")) | set(totals.get("subscriptions") or {}))
    latency = {}
    for route in routes:
        latency[route] = {"all": _hist(hs, f"latency/{route}"), **(_phases(hs, f"latency/{route}", *w) if w else {})}
    out["latency"] = latency
    out["rejected"] = {svc: counts(run, "rejected", svc) for svc in _entities(run, "rejected")}
    out["lag"] = {sub: {"all": _hist(hs, f"lag/{sub}"), **(_phases(hs, f"lag/{sub}", *w) if w else {})}
                  for sub in subs}
    out["backlog"] = {sub: backlog(run, sub) for sub in subs}
    out["dead_lettered"] = {sub: counts(run, "dead_lettered", sub) for sub in subs}
    out["disturbances"] = [_disturbance(run, hs, e, routes, subs) for e in run.faults]
    published = {}
    ts_ = float((summ.get("scales") or {}).get("time_scale") or 1.0)
    for topic in _entities(run, "published"):
        pub = run.series(METRICS["published"], topic)
        # per scenario minute: live windows are sample_interval x time_scale long and uneven
        t = pub.index.to_numpy(dtype=float)
        entry = {"total": float(pub.sum())}
        if w:
            # rates over whole windows (the live taps' sample windows are uneven under load),
            # per wall second: scenario rate x rate_scale for a live run, the rate itself for sim;
            # a live run's generator histogram has every send at its intended time; the taps'
            # counts (all a simulated run has) land in whichever window the tap drained them
            sent = hs.get(f"publish/{topic}").count > 0
            span = w[1] - w[0]
            for name, (a, b) in {"before": (w[0] - span, w[0]), "during": w}.items():
                if b <= a:
                    continue
                n = float(hs.get(f"publish/{topic}", a, b).count if sent
                          else pub[(t >= a) & (t < b)].sum())
                entry[f"{name}_per_wall_s"] = round(n / ((b - a) / ts_), 1)
            entry["from"] = "load generator sends" if sent else "published (taps)"
        published[topic] = entry
    out["published"] = published
    cons = summ.get("conservation") or {}
    out["conservation_ok"] = cons.get("ok")
    out["faults"] = [{"kind": f["kind"], "target": f["target"], "start_s": f["start_s"], "end_s": f["end_s"],
                      "details": {k: v for k, v in (f.get("details") or {}).items() if k != "holds"}}
                     for f in run.faults]
    if summ.get("mode") == "live":
        out["loadgen_counts"] = summ.get("loadgen", {}).get("counts")
        out["live"] = {k: summ["live"].get(k) for k in ("end_s", "drained", "slos_from")}
    return out


def _disturbance(run: Run, hs: _Histograms, event: dict, routes: list[str], subs: list[str]) -> dict:
    """One wave or fault (faults.json): every route's latency and every subscription's lag
    before / during / after it (a point fault, a poison message, has no `during`)."""
    start = float(event.get("start_s") or 0.0)
    end = event.get("end_s")
    end = float(run.summary.get("duration_s") or start) if end is None else max(start, float(end))
    name = (event.get("details") or {}).get("name")
    return {"kind": event.get("kind"), "target": event.get("target"), **({"name": name} if name else {}),
            "start_s": start, "end_s": end,
            "latency": {r: _phases(hs, f"latency/{r}", start, end) for r in routes},
            "lag": {s: _phases(hs, f"lag/{s}", start, end) for s in subs}}


def _merge_outside(hs: _Histograms, path: str, w: tuple[float, float]) -> dict:
    h = hs.get(path, None, w[0])
    h.merge(hs.get(path, w[1], None))
    if h.count == 0:
        return {"n": 0}
    return {"n": int(h.count), "p50_ms": _ms(h.percentile(50)), "p99_ms": _ms(h.percentile(99)), "max_ms": _ms(h.max)}


def main(argv: list[str] | None = None) -> int:
    for d in (argv if argv is not None else sys.argv[1:]):
        print(json.dumps({"run": str(d), **figures(d)}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
