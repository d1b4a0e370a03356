"""Numbers derived from a run directory: windows, rates, per-window percentiles, drain times.

Everything here reads `surgesim.rundir.Run` only, so sim and live runs are treated alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from surgesim import slo
from surgesim.histogram import bucket_value
from surgesim.rundir import GAUGES, LAG, LATENCY, METRICS, Run

def is_wave(event: dict) -> bool:
    return str(event.get("kind", "")).startswith("wave")


def event_label(event: dict) -> str:
    if is_wave(event):
        # the engines put the wave's name in details and the sources it drives in target
        return f"wave {(event.get('details') or {}).get('name') or event.get('target') or ''}".strip()
    target = event.get("target") or (event.get("details") or {}).get("topic")
    return f"{event['kind'].replace('_', ' ')} {target}" if target else event["kind"].replace("_", " ")


def disturbance_spans(events: list[dict], duration_s: float) -> list[tuple[float, float]]:
    """(start, end) per fault or wave, as surgesim.slo reads faults.json: an open-ended
    event lasts to the end of the run, except a poison message, which is instantaneous."""
    spans = []
    for e in events:
        start = float(e.get("start_s") or 0.0)
        end = e.get("end_s")
        if end is None:
            end = start if e.get("kind") == "poison_message" else duration_s
        spans.append((start, float(end)))
    return sorted(spans)


def drain_time(backlog: pd.Series, events: list[dict], window_s: float, duration_s: float) -> float | None:
    """Seconds from the last fault or wave end until the backlog is back to its level
    before the first of them; None if it never got back by the end of the run.

    The same definition as the `drain(backlog.SUB)` SLO (surgesim.slo.drain_time), so a
    report's drain column and the SLO verdict agree. `backlog` is indexed by window start."""
    if backlog.empty:
        return None
    value = slo.drain_time(backlog.index.to_numpy(dtype=float), backlog.to_numpy(dtype=float), window_s,
                           disturbance_spans(events, duration_s))
    return value if math.isfinite(value) else None


def window_of(run: Run) -> float:
    """The metric window in scenario seconds: from the data, since live runs sample at
    their own interval (times time_scale)."""
    times = np.unique(run.timeseries["time_s"].to_numpy())
    if len(times) > 1:
        return float(np.median(np.diff(times)))
    return float(run.summary.get("step_s") or 1.0)


def _dense_percentiles(group: np.ndarray, bucket: np.ndarray, count: np.ndarray, n_groups: int,
                       qs: tuple[float, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Totals and per-q bucket values for groups 0..n_groups-1, via one dense
    (group x bucket) count matrix: no sorting of the rows at all."""
    lo, hi = int(bucket.min()), int(bucket.max())
    width = hi - lo + 1
    dense = np.bincount(group * width + (bucket - lo), weights=count, minlength=n_groups * width)
    dense = dense.reshape(n_groups, width)
    cum = np.cumsum(dense, axis=1)
    total = cum[:, -1]
    values = []
    for q in qs:
        rank = np.maximum(1.0, np.ceil(total * q / 100.0))
        idx = (cum >= rank[:, None] - 0.5).argmax(axis=1)
        values.append(bucket_value(idx + lo))
    return total, values


def percentile_series(hist: pd.DataFrame, bin_s: float, qs: tuple[float, ...] = (50, 95, 99)) -> pd.DataFrame:
    """Per-bin percentiles of every path in a histograms frame, merging windows into bins
    of `bin_s` (merged counts, so each percentile is exact to the bucket).

    Returns columns path, time_s (bin start), count, and one column per q ('p50', ...).
    Vectorised on integer codes: a simulated day has ~15M histogram rows, and grouping on
    the path strings would cost minutes and gigabytes."""
    columns = ["path", "time_s", "count", *[f"p{q:g}" for q in qs]]
    if hist.empty:
        return pd.DataFrame(columns=columns)
    codes, names = pd.factorize(hist["path"])
    tbin = np.floor(hist["time_s"].to_numpy(dtype=float) / bin_s).astype(np.int64)
    n_t = int(tbin.max()) + 1
    bucket = hist["bucket"].to_numpy().astype(np.int64)
    count = hist["count"].to_numpy(dtype=float)
    frames = []
    # one dense matrix per chunk of paths, kept to ~40M cells
    per_path = n_t * (int(bucket.max()) - int(bucket.min()) + 1)
    chunk = max(1, int(40e6 // max(per_path, 1)))
    for first in range(0, len(names), chunk):
        sel = (codes >= first) & (codes < first + chunk) if chunk < len(names) else slice(None)
        n_paths = min(chunk, len(names) - first)
        group = (codes[sel].astype(np.int64) - first) * n_t + tbin[sel]
        total, values = _dense_percentiles(group, bucket[sel], count[sel], n_paths * n_t, qs)
        keep = total > 0
        g = np.flatnonzero(keep)
        frame = pd.DataFrame({"path": np.asarray(names, dtype=object)[first + g // n_t], "time_s": (g % n_t) * bin_s,
                              "count": total[keep].astype(np.int64)})
        for q, v in zip(qs, values):
            frame[f"p{q:g}"] = v[keep]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[columns]


def plot_bin(duration_s: float, window_s: float, points: int = 360) -> float:
    """A bin width giving about `points` per curve: whole windows, round seconds."""
    raw = max(window_s, duration_s / points)
    return float(math.ceil(raw / window_s) * window_s)


@dataclass
class RunData:
    """A run directory with the frames the report plots, computed once."""

    run: Run

    @property
    def summary(self) -> dict:
        return self.run.summary

    @property
    def name(self) -> str:
        return self.run.dir.name

    @property
    def duration_s(self) -> float:
        return float(self.summary.get("duration_s") or (self.run.timeseries["time_s"].max() + self.window_s))

    @property
    def start_clock_s(self) -> float:
        return float(self.summary.get("start_clock_s") or 0.0)

    @property
    def scales(self) -> dict:
        s = self.summary.get("scales") or {}
        return {"time_scale": float(s.get("time_scale") or 1.0), "rate_scale": float(s.get("rate_scale") or 1.0)}

    @property
    def events(self) -> list[dict]:
        return list(self.run.faults)

    @cached_property
    def window_s(self) -> float:
        return window_of(self.run)

    @cached_property
    def wide(self) -> dict[str, pd.DataFrame]:
        """metric key -> frame indexed by time_s with one column per entity."""
        ts = self.run.timeseries
        names = {v: k for k, v in METRICS.items()}
        out = {}
        for metric, rows in ts.groupby("metric", sort=False, observed=True):
            key = names.get(str(metric), str(metric))
            out[key] = rows.pivot_table(index="time_s", columns="entity", values="value",
                                        aggfunc="sum", observed=True).sort_index()
        return out

    def frame(self, key: str) -> pd.DataFrame:
        return self.wide.get(key, pd.DataFrame())

    def rate(self, key: str) -> pd.DataFrame:
        """A counting metric per second (count in the window / window length)."""
        f = self.frame(key)
        return f / self.window_s if key not in GAUGES else f

    @cached_property
    def bin_s(self) -> float:
        return plot_bin(self.duration_s, self.window_s)

    @cached_property
    def histograms(self) -> pd.DataFrame:
        """histograms.parquet with `path` read as a dictionary (categorical): a day's ~15M
        rows repeat ~20 path strings, and materialising each as a string costs seconds
        and gigabytes."""
        p = self.run.dir / "histograms.parquet"
        if not p.exists():
            return self.run.histograms
        from surgesim.rundir import read_parquet

        return read_parquet(p, categories=["path"])

    @cached_property
    def percentiles(self) -> pd.DataFrame:
        return percentile_series(self.histograms, self.bin_s)

    def paths(self, kind: str) -> list[str]:
        prefix = kind + "/"
        names = self.histograms["path"].unique()
        return sorted({str(p)[len(prefix):] for p in names if str(p).startswith(prefix)})

    def path_summary(self, kind: str) -> dict[str, dict]:
        """Latency summaries per path: summary.json's, else computed from the histograms."""
        key = "latency" if kind == LATENCY else "lag"
        stored = self.summary.get(key) or {}
        if stored:
            return dict(sorted(stored.items()))
        return {p: self.run.histogram(f"{kind}/{p}").summary() for p in self.paths(kind)}

    @cached_property
    def drains(self) -> dict[str, float | None]:
        backlog = self.frame("backlog")
        return {sub: drain_time(backlog[sub].dropna(), self.events, self.window_s, self.duration_s)
                for sub in backlog.columns}

    def peak_backlog(self) -> dict[str, tuple[float, float]]:
        """subscription -> (peak, clock time of the peak in scenario seconds)."""
        backlog = self.frame("backlog")
        out = {}
        for sub in backlog.columns:
            s = backlog[sub].dropna()
            if len(s):
                out[sub] = (float(s.max()), float(s.idxmax()) + self.window_s)
        totals = (self.summary.get("totals") or {}).get("subscriptions") or {}
        for sub, t in totals.items():
            if sub not in out and t.get("peak_backlog") is not None:
                out[sub] = (float(t["peak_backlog"]), math.nan)
        return out

    def total_instances(self) -> pd.Series:
        return self.frame("instances").sum(axis=1)


__all__ = ["RunData", "drain_time", "percentile_series", "plot_bin", "window_of", "is_wave", "event_label",
           "LATENCY", "LAG"]
