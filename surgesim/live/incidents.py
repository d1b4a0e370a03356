"""The figures that say whether a run shows its incident, read from a run directory (live or
simulated, the same format): peak and final backlog with the drain time, dead letters and
the attempts they took, command latency before / during / after the disturbance, lag per
reactor inside and outside it, conservation.

    python -m surgesim.live.incidents RUN_DIR [RUN_DIR ...]     # a JSON object per run

Used by docs/benchmarks/live.md (the figures quoted there) and by the live incident tests.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from surgesim.rundir import METRICS, Run, load_run
from surgesim.slo import disturbances, drain_time, _step  # noqa: PLC2701 -- the same drain rule as the SLOs

REACTOR_SUBS = ("eta-sub", "notification-sub", "billing-sub", "driver-scoring-sub", "pod-sub", "client-webhook-sub")


def _ms(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x * 1000.0, 1)


def _hist(run: Run, path: str, start: float | None = None, end: float | None = None) -> dict:
    h = run.histogram(path, start, end)
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


def figures(run_dir: str | Path) -> dict:
    run = load_run(run_dir)
    summ = run.summary
    w = window(run)
    out: dict = {"mode": summ.get("mode"), "scenario": summ.get("scenario"), "verdict": summ.get("verdict"),
                 "scales": summ.get("scales"), "window_s": list(w) if w else None,
                 "slos": [{"text": s["text"], "observed": s["observed"], "holds": s["holds"]} for s in summ.get("slos", [])]}
    cmd = {"all": _hist(run, "latency/command")}
    if w:
        cmd["before"] = _hist(run, "latency/command", None, w[0])
        cmd["during"] = _hist(run, "latency/command", w[0], w[1])
        cmd["after"] = _hist(run, "latency/command", w[1], None)
    out["command_latency"] = cmd
    out["rejected_command"] = counts(run, "rejected", "command")
    lag = {}
    for sub in REACTOR_SUBS:
        entry = {"all": _hist(run, f"lag/{sub}")}
        if w:
            entry["outside"] = _merge_outside(run, f"lag/{sub}", w)
            entry["during"] = _hist(run, f"lag/{sub}", w[0], w[1])
        lag[sub] = entry
    out["lag"] = lag
    out["backlog"] = {sub: backlog(run, sub) for sub in (*REACTOR_SUBS, "telemetry-livemap", "telemetry-geofence",
                                                         "telemetry-bigquery")}
    out["dead_lettered"] = {sub: counts(run, "dead_lettered", sub) for sub in REACTOR_SUBS}
    pub = run.series(METRICS["published"], "vehicle.telemetry")
    if not pub.empty:
        # per scenario minute: live windows are sample_interval x time_scale long and uneven
        t = pub.index.to_numpy(dtype=float)
        ts_ = float((summ.get("scales") or {}).get("time_scale") or 1.0)
        tel = {"total": float(pub.sum())}
        if w:
            # rates over whole windows (the live taps' sample windows are uneven under load),
            # per wall second: scenario rate x rate_scale for a live run, the rate itself for sim
            # a live run's generator histogram has every send at its intended time; the taps'
            # counts (all a simulated run has) land in whichever window the tap drained them
            sent = run.histogram("publish/vehicle.telemetry").count > 0
            span = w[1] - w[0]
            for name, (a, b) in {"before": (w[0] - span, w[0]), "during": w}.items():
                n = float(run.histogram("publish/vehicle.telemetry", a, b).count if sent
                          else pub[(t >= a) & (t < b)].sum())
                tel[f"{name}_per_wall_s"] = round(n / ((b - a) / ts_), 1)
            tel["from"] = "load generator sends" if sent else "published (taps)"
        out["telemetry_published"] = tel
    cons = summ.get("conservation") or {}
    out["conservation_ok"] = cons.get("ok")
    out["faults"] = [{"kind": f["kind"], "target": f["target"], "start_s": f["start_s"], "end_s": f["end_s"],
                      "details": {k: v for k, v in (f.get("details") or {}).items() if k != "holds"}}
                     for f in run.faults]
    if summ.get("mode") == "live":
        out["loadgen_counts"] = summ.get("loadgen", {}).get("counts")
        out["live"] = {k: summ["live"].get(k) for k in ("end_s", "drained", "slos_from")}
    return out


def _merge_outside(run: Run, path: str, w: tuple[float, float]) -> dict:
    h = run.histogram(path, None, w[0])
    h.merge(run.histogram(path, w[1], None))
    if h.count == 0:
        return {"n": 0}
    return {"n": int(h.count), "p50_ms": _ms(h.percentile(50)), "p99_ms": _ms(h.percentile(99)), "max_ms": _ms(h.max)}


def main(argv: list[str] | None = None) -> int:
    for d in (argv if argv is not None else sys.argv[1:]):
        print(json.dumps({"run": str(d), **figures(d)}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
