"""The run directory: the one format both engines write and reports read.

    runs/<id>/
      summary.json        inputs, totals, SLO verdicts, conservation. Deterministic: no wall
                          clock, no absolute paths, so the same seed gives the same bytes.
      meta.json           wall-clock start/end, host, versions (not deterministic)
      timeseries.parquet  long format: time_s, metric, entity, value (one row per window)
      histograms.parquet  time_s, path, bucket, count: every latency sample, per window
      faults.json         the fault and wave timeline: kind, target, start_s, end_s, details
      report.html, plots/ written by surgesim.reports

Metric names follow Cloud Monitoring's where one exists (`METRICS`), so a reader who
knows the console knows the columns. `pd.read_parquet("runs/<id>/timeseries.parquet")`
loads the series.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from surgesim.histogram import N_BUCKETS, Histogram

FORMAT_VERSION = 1


METRICS = {
    # per subscription (gauges, sampled at the window's end)
    "backlog": "pubsub.googleapis.com/subscription/num_undelivered_messages",
    "oldest_unacked": "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
    # per subscription (counts within the window)
    "delivered": "pubsub.googleapis.com/subscription/sent_message_count",
    "acked": "pubsub.googleapis.com/subscription/ack_message_count",
    "nacked": "pubsub.googleapis.com/subscription/nack_requests",
    "dead_lettered": "pubsub.googleapis.com/subscription/dead_letter_message_count",
    "filtered": "surgesim/subscription/filtered_message_count",
    # per topic (count within the window)
    "published": "pubsub.googleapis.com/topic/send_message_operation_count",
    # per service (instances: gauge; the rest: counts within the window)
    "instances": "run.googleapis.com/container/instance_count",
    "requests": "run.googleapis.com/request_count",
    "rejected": "surgesim/service/rejected_request_count",
    "errors": "surgesim/service/error_count",
    "utilisation": "surgesim/service/slot_utilisation",
    # per collection
    "firestore_writes": "firestore.googleapis.com/document/write_count",
    # per path (from histograms, for convenience)
    "latency_p50": "run.googleapis.com/request_latencies/p50",
    "latency_p99": "run.googleapis.com/request_latencies/p99",
    "lag_p50": "surgesim/subscription/end_to_end_lag/p50",
    "lag_p99": "surgesim/subscription/end_to_end_lag/p99",
    "wait_p50": "surgesim/service/queue_wait/p50",
    "wait_p99": "surgesim/service/queue_wait/p99",
    "freshness_p50": "surgesim/collection/freshness/p50",
    "freshness_p99": "surgesim/collection/freshness/p99",
    "bigquery_job_p50": "surgesim/service/bigquery_job_run_time/p50",
    "bigquery_job_p99": "surgesim/service/bigquery_job_run_time/p99",
}
GAUGES = {"backlog", "oldest_unacked", "instances", "utilisation"}
"""Metrics whose value is a level at the window's end; the rest count events in the window."""

# Histogram paths: "latency/<service>.<route>" for HTTP accept latency, "lag/<subscription>"
# for publish -> handler done, "lag/<trigger>" for a Firestore/Storage change -> handled, "wait/<service>.<channel>" for queueing delay at a service
# (arrival to start on a slot; channel: a route, subscription or trigger), "freshness/<collection>"
# for the age of the newest message a keyed document shows when read (sim/freshness.py),
# "bigquery_job/<service>" for the run time of each BigQuery job the service inserted.
LATENCY = "latency"
LAG = "lag"

_ID_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def new_run_id(scenario: str, mode: str, stamp: str) -> str:
    return _ID_SAFE.sub("-", f"{scenario}-{mode}-{stamp}")


def _clean(value: Any) -> Any:
    """JSON-safe and stable: NaN/inf -> None, floats rounded to 9 significant digits."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.9g}")
    if isinstance(value, (np.floating,)):
        return _clean(float(value))
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(data: Any) -> str:
    return json.dumps(_clean(data), indent=2, sort_keys=True) + "\n"


class RunWriter:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def write_summary(self, summary: dict) -> Path:
        summary = {"format": FORMAT_VERSION, **summary}
        path = self.dir / "summary.json"
        path.write_text(dumps(summary), encoding="utf-8")
        return path

    def write_meta(self, meta: dict) -> Path:
        path = self.dir / "meta.json"
        path.write_text(dumps(meta), encoding="utf-8")
        return path

    def write_faults(self, events: list[dict]) -> Path:
        path = self.dir / "faults.json"
        path.write_text(dumps(sorted(events, key=lambda e: (e["start_s"], e["kind"]))), encoding="utf-8")
        return path

    def write_jobs(self, jobs: dict[str, dict]) -> Path:
        """Per Cloud Run Job: `duration_s` (scenario seconds, start of its first execution to
        the end of its last; None if one never ended), `state` (succeeded / failed /
        cancelled / running), `executions`, `starts_s` (each execution's start in scenario
        seconds: a schedule's starts can be checked against it); what the `job.NAME` SLOs
        read (only a succeeded job has a value there) and calibration compares."""
        path = self.dir / "jobs.json"
        path.write_text(dumps(jobs), encoding="utf-8")
        return path

    def write_timeseries(self, frame: pd.DataFrame) -> Path:
        frame = frame[["time_s", "metric", "entity", "value"]].astype(
            {"time_s": "float64", "metric": "string", "entity": "string", "value": "float64"}
        )
        frame = frame.sort_values(["metric", "entity", "time_s"], kind="stable").reset_index(drop=True)
        path = self.dir / "timeseries.parquet"
        write_parquet(path, frame)
        return path

    def write_histograms(self, frame: pd.DataFrame) -> Path:
        frame = frame[["time_s", "path", "bucket", "count"]].astype(
            {"time_s": "float64", "path": "string", "bucket": "int32", "count": "int64"}
        )
        frame = frame[frame["count"] > 0].sort_values(["path", "time_s", "bucket"], kind="stable")
        # `path` dictionary-encoded (a day's ~15M rows repeat ~20 strings): read_histograms
        # gets it back as a categorical without materialising a string per row
        frame = frame.reset_index(drop=True).astype({"path": "category"})
        path = self.dir / "histograms.parquet"
        write_parquet(path, frame)
        return path


# Parquet through fastparquet's own API, the one way every writer and reader here uses:
# fastparquet with cramjam and fsspec is ~16 MB installed where pyarrow is ~170 MB, and the
# base install is meant to be small (README, Install sizes). Its own API, not pandas'
# engine="fastparquet", which pandas 3 deprecates. The files are plain Parquet, zstd (a
# day's histograms: 17 MB; pyarrow's default wrote 22 MB): pyarrow, DuckDB or polars read
# them as well, and files pyarrow wrote read back here.
def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    import fastparquet

    fastparquet.write(str(path), frame, write_index=False, compression="ZSTD")


def read_parquet(path: Path, categories: list[str] | None = None) -> pd.DataFrame:
    """A run directory's Parquet file as a DataFrame. Columns in `categories` come back
    categorical (read from the file's dictionary, no string per row); every other text
    column as pandas' string dtype, whoever wrote the file."""
    import fastparquet

    pf = fastparquet.ParquetFile(str(path))
    wanted = categories or []
    stored = [c for c in wanted if c in pf.categories]  # files pyarrow wrote store none as such
    frame = pf.to_pandas(categories=stored)
    to = {c: "category" for c in wanted if c not in stored}
    to.update({c: "string" for c in frame.columns if c not in wanted
               and (frame[c].dtype == object or isinstance(frame[c].dtype, pd.CategoricalDtype))})
    return frame.astype(to) if to else frame


def histogram_rows(time_s: float, path: str, hist: Histogram) -> pd.DataFrame:
    idx, counts = hist.nonzero()
    return pd.DataFrame({"time_s": time_s, "path": path, "bucket": idx, "count": counts})


@dataclass
class Run:
    """A run directory, read back."""

    dir: Path

    @cached_property
    def summary(self) -> dict:
        return json.loads((self.dir / "summary.json").read_text(encoding="utf-8"))

    @cached_property
    def meta(self) -> dict:
        p = self.dir / "meta.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}

    @cached_property
    def faults(self) -> list[dict]:
        p = self.dir / "faults.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else []

    @cached_property
    def jobs(self) -> dict[str, dict]:
        p = self.dir / "jobs.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}

    @cached_property
    def timeseries(self) -> pd.DataFrame:
        return read_parquet(self.dir / "timeseries.parquet")

    @cached_property
    def histograms(self) -> pd.DataFrame:
        p = self.dir / "histograms.parquet"
        if not p.exists():
            return pd.DataFrame({"time_s": [], "path": [], "bucket": [], "count": []})
        return read_parquet(p)

    def series(self, metric: str, entity: str) -> pd.Series:
        """One metric for one entity, indexed by time_s. `metric` is a short key of METRICS."""
        ts = self.timeseries
        name = METRICS.get(metric, metric)
        rows = ts[(ts["metric"] == name) & (ts["entity"] == entity)]
        return pd.Series(rows["value"].to_numpy(), index=rows["time_s"].to_numpy(), name=f"{metric}.{entity}")

    @cached_property
    def _path_codes(self) -> tuple[np.ndarray, list[str]]:
        codes, uniques = pd.factorize(self.histograms["path"])
        return codes, [str(u) for u in uniques]

    def path_rows(self, path: str) -> np.ndarray:
        """A mask of the histogram rows of `path` and of its sub-paths ('latency/command' and
        'latency/command.ROUTE'). Matched on the few distinct paths, not the millions of rows:
        a string test per row cost a day-sized run ~4 s per SLO."""
        codes, uniques = self._path_codes
        keep = [i for i, u in enumerate(uniques) if u == path or u.startswith(path + ".")]
        return np.isin(codes, keep)

    def paths(self, kind: str) -> list[str]:
        prefix = kind + "/"
        return sorted({p[len(prefix):] for p in self.histograms["path"].unique() if p.startswith(prefix)})

    def histogram(self, path: str, start_s: float | None = None, end_s: float | None = None) -> Histogram:
        """Every sample of one path (e.g. 'latency/command.mark_delivered'), optionally in [start, end).
        A path naming a service alone ('latency/command') merges all its routes."""
        h = self.histograms
        sel = self.path_rows(path)
        if start_s is not None:
            sel &= h["time_s"] >= start_s
        if end_s is not None:
            sel &= h["time_s"] < end_s
        rows = h[sel]
        hist = Histogram()
        if len(rows):
            counts = np.bincount(rows["bucket"].to_numpy(), weights=rows["count"].to_numpy(), minlength=N_BUCKETS)
            hist.counts = counts.astype(np.int64)
            hist.count = int(hist.counts.sum())
            from surgesim.histogram import bucket_value

            nz = np.nonzero(hist.counts)[0]
            values = bucket_value(nz)
            hist.total = float((values * hist.counts[nz]).sum())
            hist.min, hist.max = float(values.min()), float(values.max())
        return hist


def load_run(directory: str | Path) -> Run:
    d = Path(directory)
    if not (d / "summary.json").is_file():
        raise FileNotFoundError(f"{d} is not a surgesim run directory (no summary.json)")
    return Run(d)
