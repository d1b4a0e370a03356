"""Latency recording for the load generators, in the run directory's histogram format.

Per send, two latencies go into surgesim.histogram buckets per wall window:

    latency/<service>.<route>    answer received - intended send time   (the SLO's latency)
    response/<service>.<route>   answer received - actually sent         (what Locust reports)
    publish/<topic>              publish acked - intended time
    publish_response/<topic>     publish acked - actually sent

The first excludes nothing: when the generator falls behind (a slow server holding every
connection), the wait before the send is counted, so there is no coordinated omission.
`lateness/<generator>` records how far behind its schedule the generator sent.

Samples are buffered in arrays and bucketed in bulk (Histogram.record per sample would
cost more than the send); rows are `histogram_rows`-shaped: time_s (scenario seconds at the
window's start), path, bucket, count.
"""

from __future__ import annotations

import json
import math
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from surgesim.histogram import N_BUCKETS, Histogram, bucket_of
from surgesim.rundir import RunWriter, dumps, read_parquet

_COMPACT_AT = 200_000


def response_path(label: str) -> str:
    kind, name = label.split("/", 1)
    return ("response/" if kind == "latency" else f"{kind}_response/") + name


class _Path:
    __slots__ = ("windows", "values", "counts", "n", "total", "min", "max")

    def __init__(self) -> None:
        self.windows = array("q")
        self.values = array("d")
        self.counts: dict[int, int] = {}
        self.n, self.total, self.min, self.max = 0, 0.0, math.inf, 0.0


class Recorder:
    def __init__(self, time_scale: float = 1.0, window_s: float = 1.0):
        self.time_scale = float(time_scale)
        self.window_s = float(window_s)
        self._paths: dict[str, _Path] = {}
        self._buffered = 0
        self.counts: dict[str, dict[str, int]] = {}
        """Per source: scheduled, sent, ok, errors, starved, and status codes `status_<code>`."""

    def count(self, source: str, key: str, n: int = 1) -> None:
        c = self.counts.setdefault(source, {"scheduled": 0, "sent": 0, "ok": 0, "errors": 0, "starved": 0})
        c[key] = c.get(key, 0) + n

    def sample(self, path: str, wall_t: float, value: float) -> None:
        p = self._paths.get(path)
        if p is None:
            p = self._paths[path] = _Path()
        p.windows.append(int(wall_t // self.window_s) if wall_t > 0 else 0)
        p.values.append(value)
        p.n += 1
        p.total += value
        if value < p.min:
            p.min = value
        if value > p.max:
            p.max = value
        self._buffered += 1
        if self._buffered >= _COMPACT_AT:
            self.compact()

    def record(self, label: str | tuple[str, ...], source: str, wall_t: float, intended: float, sent_at: float, done_at: float,
               ok: bool, status: int | str | None = None, generator: str = "loadgen") -> None:
        """One answered send. Times are epoch seconds; wall_t is the intended time in wall
        seconds since the start (it picks the window). label: a path, or several (a labelled
        flow step's own and its route's: both histograms get its latency)."""
        labels = (label,) if isinstance(label, str) else tuple(label)
        label = labels[0]
        for other in labels[1:]:
            self.sample(other, wall_t, max(0.0, done_at - intended))
        self.sample(label, wall_t, max(0.0, done_at - intended))
        self.sample(response_path(label), wall_t, max(0.0, done_at - sent_at))
        self.sample(f"lateness/{generator}", wall_t, max(0.0, sent_at - intended))
        self.count(source, "sent")
        self.count(source, "ok" if ok else "errors")
        if status is not None:
            self.count(source, f"status_{status}")

    def compact(self) -> None:
        for p in self._paths.values():
            if not p.values:
                continue
            keys = np.frombuffer(p.windows, dtype=np.int64) * N_BUCKETS + bucket_of(np.frombuffer(p.values, dtype=np.float64))
            uniq, cnt = np.unique(keys, return_counts=True)
            for k, c in zip(uniq.tolist(), cnt.tolist()):
                p.counts[k] = p.counts.get(k, 0) + c
            p.windows, p.values = array("q"), array("d")
        self._buffered = 0

    # ---- results -----------------------------------------------------------------------

    def rows(self) -> pd.DataFrame:
        """time_s (scenario seconds), path, bucket, count: histograms.parquet rows."""
        self.compact()
        frames = []
        for name, p in sorted(self._paths.items()):
            if not p.counts:
                continue
            keys = np.fromiter(p.counts.keys(), dtype=np.int64, count=len(p.counts))
            cnt = np.fromiter(p.counts.values(), dtype=np.int64, count=len(p.counts))
            frames.append(pd.DataFrame({"time_s": (keys // N_BUCKETS) * self.window_s * self.time_scale,
                                        "path": name, "bucket": (keys % N_BUCKETS).astype(np.int32), "count": cnt}))
        if not frames:
            return pd.DataFrame({"time_s": pd.Series([], dtype="float64"), "path": pd.Series([], dtype="string"),
                                 "bucket": pd.Series([], dtype="int32"), "count": pd.Series([], dtype="int64")})
        return pd.concat(frames, ignore_index=True).sort_values(["path", "time_s", "bucket"], kind="stable",
                                                                ignore_index=True)

    def histograms(self) -> dict[str, Histogram]:
        """Each path's whole-run histogram (exact count, sum, min, max)."""
        self.compact()
        out = {}
        for name, p in self._paths.items():
            h = Histogram()
            for k, c in p.counts.items():
                h.counts[k % N_BUCKETS] += c
            h.count, h.total, h.min, h.max = p.n, p.total, p.min, p.max
            out[name] = h
        return out


@dataclass
class LoadResult:
    """What a load generator sent and measured."""

    generator: str
    scenario: str
    scales: dict[str, float]
    duration_s: float
    counts: dict[str, dict[str, int]]
    """Per source: scheduled, sent, ok, errors, starved, status_<code>."""
    histograms: dict[str, Histogram]
    rows: pd.DataFrame
    out_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def latency(self) -> dict[str, dict[str, float]]:
        return {p: h.summary() for p, h in sorted(self.histograms.items())}

    def by_route(self) -> dict[str, int]:
        """Answered sends per histogram label (latency/<service>.<route>, publish/<topic>)."""
        return {p: h.count for p, h in sorted(self.histograms.items())
                if p.startswith("latency/") or p.startswith("publish/")}

    @property
    def lateness(self) -> dict[str, float]:
        h = self.histograms.get(f"lateness/{self.generator}")
        return h.summary() if h is not None else {}

    def total(self, key: str) -> int:
        return sum(c.get(key, 0) for c in self.counts.values())

    def summary(self) -> dict[str, Any]:
        return {"generator": self.generator, "scenario": self.scenario, "scales": self.scales,
                "duration_s": self.duration_s, "counts": self.counts, "latency": self.latency(),
                "lateness": self.lateness,
                "exact": {p: {"count": h.count, "total": h.total, "min": h.min if h.count else None, "max": h.max}
                          for p, h in sorted(self.histograms.items())},
                **self.extra}

    def write(self, out_dir: str | Path) -> Path:
        """out_dir/histograms.parquet (run directory rows) and out_dir/loadgen.json."""
        d = Path(out_dir)
        RunWriter(d).write_histograms(self.rows)
        (d / "loadgen.json").write_text(dumps(self.summary()), encoding="utf-8")
        self.out_dir = d
        return d


def read_result(out_dir: str | Path) -> LoadResult:
    """A LoadResult back from what `LoadResult.write` left in out_dir."""
    d = Path(out_dir)
    summary = json.loads((d / "loadgen.json").read_text(encoding="utf-8"))
    rows = read_parquet(d / "histograms.parquet") if (d / "histograms.parquet").exists() else Recorder().rows()
    hists: dict[str, Histogram] = {}
    for path, grp in rows.groupby("path"):
        h = Histogram()
        h.counts = np.bincount(grp["bucket"].to_numpy(), weights=grp["count"].to_numpy(), minlength=N_BUCKETS).astype(np.int64)
        exact = summary["exact"].get(path, {})
        h.count = int(h.counts.sum())
        h.total = float(exact.get("total") or 0.0)
        h.min = float(exact["min"]) if exact.get("min") is not None else math.inf
        h.max = float(exact.get("max") or 0.0)
        hists[str(path)] = h
    known = {"generator", "scenario", "scales", "duration_s", "counts", "latency", "lateness", "exact"}
    return LoadResult(summary["generator"], summary["scenario"], summary["scales"], summary["duration_s"],
                      summary["counts"], hists, rows, d, {k: v for k, v in summary.items() if k not in known})


def merge_results(results: list[LoadResult]) -> LoadResult:
    """One LoadResult from several generator processes that shared one schedule (Locust
    workers, each sending its share): counts summed per source, histograms merged bucket by
    bucket per path (exact count, sum, min, max kept), rows summed per (window, path,
    bucket). Windows line up because every process counts wall time from its own start
    of the same schedule."""
    if not results:
        raise ValueError("no load results to merge")
    first = results[0]
    for r in results[1:]:
        if (r.generator, r.scenario, r.scales) != (first.generator, first.scenario, first.scales):
            raise ValueError(f"cannot merge {r.generator}/{r.scenario} {r.scales} "
                             f"into {first.generator}/{first.scenario} {first.scales}")
    counts: dict[str, dict[str, int]] = {}
    for r in results:
        for source, c in r.counts.items():
            into = counts.setdefault(source, {})
            for key, n in c.items():
                into[key] = into.get(key, 0) + n
    hists: dict[str, Histogram] = {}
    for r in results:
        for path, h in r.histograms.items():
            merged = hists.setdefault(path, Histogram())
            merged.merge(h)
    rows = pd.concat([r.rows for r in results], ignore_index=True)
    if len(rows):
        rows = (rows.groupby(["time_s", "path", "bucket"], as_index=False, sort=False)["count"].sum()
                .sort_values(["path", "time_s", "bucket"], kind="stable", ignore_index=True))
        rows["bucket"] = rows["bucket"].astype(np.int32)
        rows["count"] = rows["count"].astype(np.int64)
    extra = {k: v for k, v in first.extra.items() if k not in ("unfinished", "pools", "run_tag", "prepare")}
    extra["processes"] = [{k: r.extra.get(k) for k in ("run_tag", "unfinished", "pools", "prepare")}
                          for r in results]
    extra["unfinished"] = sum(int(r.extra.get("unfinished") or 0) for r in results)
    return LoadResult(first.generator, first.scenario, first.scales, max(r.duration_s for r in results), counts,
                      hists, rows, None, extra)
