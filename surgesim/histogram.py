"""Latency histograms that count every sample, in log-spaced buckets.

HDR-style: 64 buckets per doubling from 1 microsecond, so any percentile is within ~0.6%
of the true sample, whatever the range. Recording is vectorised (NumPy), because the
simulator records millions of samples per window in bulk; the `hdrhistogram` package
records one value per Python call, which is too slow for that. Exact count, sum, min and
max are kept beside the buckets, so the mean is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SUB_BUCKETS = 64
FLOOR_S = 1e-6
N_BUCKETS = 1 + SUB_BUCKETS * 40  # up to 1e-6 * 2**40 s (~12.7 days)


def bucket_of(values: np.ndarray) -> np.ndarray:
    """Bucket index per value (seconds). Bucket 0 holds values below 1 microsecond (zeros)."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        idx = np.floor(np.log2(np.maximum(v, FLOOR_S) / FLOOR_S) * SUB_BUCKETS).astype(np.int64) + 1
    idx = np.where(v < FLOOR_S, 0, idx)
    return np.clip(idx, 0, N_BUCKETS - 1)


def bucket_bounds(idx: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    i = np.asarray(idx, dtype=np.float64)
    lower = np.where(i == 0, 0.0, FLOOR_S * np.exp2((i - 1) / SUB_BUCKETS))
    upper = FLOOR_S * np.exp2(i / SUB_BUCKETS)
    return lower, upper


def bucket_value(idx: np.ndarray | int) -> np.ndarray:
    """The representative value of a bucket: its geometric midpoint (0 for bucket 0)."""
    lower, upper = bucket_bounds(idx)
    return np.where(np.asarray(idx) == 0, 0.0, np.sqrt(lower * upper))


@dataclass
class Histogram:
    counts: np.ndarray = field(default_factory=lambda: np.zeros(N_BUCKETS, dtype=np.int64))
    count: int = 0
    total: float = 0.0
    min: float = math.inf
    max: float = 0.0

    def record(self, values: np.ndarray | list[float] | float) -> None:
        v = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if v.size == 0:
            return
        np.add.at(self.counts, bucket_of(v), 1)
        self.count += int(v.size)
        self.total += float(v.sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    def record_counts(self, value: float, n: int) -> None:
        """n samples of one value: the fluid path records a whole cohort at once."""
        if n <= 0:
            return
        self.counts[int(bucket_of(np.array([value]))[0])] += n
        self.count += n
        self.total += value * n
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def merge(self, other: "Histogram") -> None:
        self.counts += other.counts
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def percentile(self, q: float) -> float:
        """q in [0, 100]. NaN when empty. p100 is the exact max."""
        if self.count == 0:
            return math.nan
        if q >= 100:
            return self.max
        rank = max(1, math.ceil(self.count * q / 100.0))
        idx = int(np.searchsorted(np.cumsum(self.counts), rank))
        return float(min(max(bucket_value(idx), self.min), self.max))

    def fraction_above(self, threshold: float) -> float:
        if self.count == 0:
            return math.nan
        return float(self.counts[bucket_of(np.array([threshold]))[0] + 1:].sum()) / self.count

    def nonzero(self) -> tuple[np.ndarray, np.ndarray]:
        idx = np.nonzero(self.counts)[0]
        return idx, self.counts[idx]

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean": self.mean,
            "p50": self.percentile(50),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "p999": self.percentile(99.9),
            "max": self.max if self.count else math.nan,
        }
