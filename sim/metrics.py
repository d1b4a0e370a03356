"""Metric windows: counters binned by event time, gauges sampled at window ends, and
latency histograms per window that count every sample.

Counters are binned by the time the event happens, not when the engine computes it, so a
queue whose acks are computed early still reports them in the right window. Bin `nwin`
holds events after the run's end (they did not happen within the run)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from surgesim.histogram import N_BUCKETS, Histogram, bucket_of, bucket_value
from surgesim.rundir import METRICS


SMALL = 2048
"""Batches smaller than this are buffered (counters, histogram samples)."""
PENDING_MAX = 2_000_000
"""Buffered counter samples are binned once this many have accumulated."""


class Metrics:
    def __init__(self, duration: float, step: float, hist_window: float):
        self.duration = duration
        self.step = step
        self.nwin = int(math.ceil(duration / step - 1e-9))
        self.hist_window = hist_window
        self.counters: dict[tuple[str, str], np.ndarray] = {}
        self.gauges: dict[tuple[str, str], np.ndarray] = {}
        self._hist_cur: dict[str, tuple[int, np.ndarray]] = {}
        self._hist_rows: list[tuple[float, str, np.ndarray, np.ndarray]] = []
        self.totals: dict[str, Histogram] = {}
        # Small batches are buffered and binned together (one NumPy pass per counter
        # instead of one per call); large ones are binned at once.
        self._pending: dict[tuple[str, str], list[np.ndarray]] = {}
        self._pending_n = 0
        self._hist_pending: dict[str, list[np.ndarray]] = {}

    # ---- counters ----------------------------------------------------------------------

    def _arr(self, key: str, entity: str) -> np.ndarray:
        arr = self.counters.get((key, entity))
        if arr is None:
            arr = self.counters[(key, entity)] = np.zeros(self.nwin + 1)
        return arr

    def declare(self, key: str, entity: str) -> None:
        """Make a counter exist (zero rows are written), so readers find every entity."""
        self._arr(key, entity)

    def count(self, key: str, entity: str, times: np.ndarray, weights: np.ndarray | None = None) -> None:
        n = times.shape[0]
        if n == 0:
            return
        if n < SMALL and weights is None:
            lst = self._pending.get((key, entity))
            if lst is None:
                self._arr(key, entity)
                lst = self._pending[(key, entity)] = []
            lst.append(times)
            self._pending_n += n
            if self._pending_n > PENDING_MAX:
                self.flush_counts()
            return
        self._bin(self._arr(key, entity), times, weights)

    def flush_counts(self) -> None:
        for k, lst in self._pending.items():
            if lst:
                self._bin(self.counters[k], lst[0] if len(lst) == 1 else np.concatenate(lst), None)
                lst.clear()
        self._pending_n = 0

    def _bin(self, arr: np.ndarray, times: np.ndarray, weights: np.ndarray | None) -> None:
        inv = 1.0 / self.step
        lo_t, hi_t = float(times.min()), float(times.max())
        if lo_t == lo_t and hi_t == hi_t:  # not NaN
            # Most batches fall in one window: two reductions instead of binning each time.
            lo = min(max(int(lo_t * inv), 0), self.nwin)
            if lo == min(max(int(hi_t * inv), 0), self.nwin):
                arr[lo] += times.shape[0] if weights is None else float(weights.sum())
                return
        idx = np.minimum((times * inv).astype(np.int64), self.nwin)
        idx = np.maximum(idx, 0)
        lo, hi = int(idx.min()), int(idx.max())
        if lo == hi:
            arr[lo] += times.shape[0] if weights is None else float(weights.sum())
        else:
            arr[lo:hi + 1] += np.bincount(idx - lo, weights, minlength=hi - lo + 1)

    def count_at(self, key: str, entity: str, t: float, n: float = 1.0) -> None:
        arr = self._arr(key, entity)
        arr[max(0, min(int(t / self.step), self.nwin))] += n

    def total(self, key: str, entity: str, within: bool = True) -> float:
        self.flush_counts()
        arr = self.counters.get((key, entity))
        if arr is None:
            return 0.0
        return float(arr[: self.nwin].sum() if within else arr.sum())

    def cumulative(self, key: str, entity: str) -> np.ndarray:
        self.flush_counts()
        arr = self.counters.get((key, entity))
        return np.zeros(self.nwin) if arr is None else np.cumsum(arr[: self.nwin])

    # ---- gauges ------------------------------------------------------------------------

    def gauge(self, key: str, entity: str, window: int, value: float) -> None:
        arr = self.gauges.get((key, entity))
        if arr is None:
            arr = self.gauges[(key, entity)] = np.full(self.nwin, np.nan)
        if 0 <= window < self.nwin:
            arr[window] = value

    def set_gauge_series(self, key: str, entity: str, values: np.ndarray) -> None:
        self.gauges[(key, entity)] = np.asarray(values, dtype=np.float64)

    # ---- histograms --------------------------------------------------------------------

    def record(self, path: str, t: float, values: np.ndarray) -> None:
        """Samples of one path, binned into the histogram window containing t."""
        if values.shape[0] == 0:
            return
        hw = int(t // self.hist_window)
        cur = self._hist_cur.get(path)
        if cur is None or cur[0] != hw:
            if cur is not None:
                self._take(path, cur[1])
                self._flush(path, *cur)
            cur = self._hist_cur[path] = (hw, np.zeros(N_BUCKETS, dtype=np.int64))
            self._hist_pending[path] = []
            if path not in self.totals:
                self.totals[path] = Histogram()
        if values.shape[0] < SMALL:
            self._hist_pending[path].append(values)
        else:
            self._add(path, cur[1], values)

    def record_zeros(self, path: str, t: float, n: int) -> None:
        """n samples of 0 (e.g. waits of a batch nobody waited in), without binning each."""
        if n <= 0:
            return
        hw = int(t // self.hist_window)
        cur = self._hist_cur.get(path)
        if cur is None or cur[0] != hw:
            self.record(path, t, np.zeros(1))
            n -= 1
            if n == 0:
                return
            cur = self._hist_cur[path]
        cur[1][0] += n
        tot = self.totals[path]
        tot.count += n
        tot.min = 0.0

    def _take(self, path: str, counts: np.ndarray) -> None:
        pend = self._hist_pending.get(path)
        if pend:
            self._add(path, counts, pend[0] if len(pend) == 1 else np.concatenate(pend))
            pend.clear()

    def _add(self, path: str, counts: np.ndarray, values: np.ndarray) -> None:
        counts += np.bincount(bucket_of(values), minlength=N_BUCKETS)
        tot = self.totals[path]
        tot.count += int(values.shape[0])
        tot.total += float(values.sum())
        tot.min = min(tot.min, float(values.min()))
        tot.max = max(tot.max, float(values.max()))

    def _flush(self, path: str, hw: int, counts: np.ndarray) -> None:
        idx = np.nonzero(counts)[0]
        if idx.size:
            self._hist_rows.append((hw * self.hist_window, path, idx, counts[idx]))
            self.totals[path].counts[idx] += counts[idx]

    def finish_histograms(self) -> None:
        for path, cur in sorted(self._hist_cur.items()):
            self._take(path, cur[1])
            self._flush(path, *cur)
        self._hist_cur.clear()

    # ---- frames ------------------------------------------------------------------------

    def histogram_frame(self) -> pd.DataFrame:
        if not self._hist_rows:
            return pd.DataFrame({"time_s": [], "path": [], "bucket": [], "count": []})
        return pd.DataFrame({
            "time_s": np.concatenate([np.full(r[2].size, r[0]) for r in self._hist_rows]),
            "path": np.concatenate([np.full(r[2].size, r[1], dtype=object) for r in self._hist_rows]),
            "bucket": np.concatenate([r[2] for r in self._hist_rows]),
            "count": np.concatenate([r[3] for r in self._hist_rows]),
        })

    def percentile_rows(self) -> list[pd.DataFrame]:
        """latency_p50/p99 and lag_p50/p99 per histogram window, from the histograms (one
        frame for all windows: a day has tens of thousands of them)."""
        if not self._hist_rows:
            return []
        times, metrics, entities, values = [], [], [], []
        for time_s, path, idx, counts in self._hist_rows:
            kind, _, entity = path.partition("/")
            cum = np.cumsum(counts)
            for q in (50, 99):
                rank = max(1, math.ceil(cum[-1] * q / 100.0))
                times.append(time_s)
                metrics.append(METRICS[f"{kind}_p{q}"])
                entities.append(entity)
                values.append(idx[int(np.searchsorted(cum, rank))])
        return [pd.DataFrame({"time_s": np.asarray(times, dtype=np.float64), "metric": metrics, "entity": entities,
                              "value": bucket_value(np.asarray(values)).astype(np.float64)})]

    def timeseries_frame(self) -> pd.DataFrame:
        times = np.arange(self.nwin) * self.step
        self.flush_counts()
        frames = []
        for (key, entity), arr in sorted(self.counters.items()):
            if key.startswith("_"):  # internal counters (e.g. per-subscription publishes)
                continue
            frames.append(pd.DataFrame({"time_s": times, "metric": METRICS[key], "entity": entity, "value": arr[: self.nwin]}))
        for (key, entity), arr in sorted(self.gauges.items()):
            frames.append(pd.DataFrame({"time_s": times, "metric": METRICS[key], "entity": entity, "value": arr}))
        frames += self.percentile_rows()
        if not frames:
            return pd.DataFrame({"time_s": [], "metric": [], "entity": [], "value": []})
        return pd.concat(frames, ignore_index=True)
