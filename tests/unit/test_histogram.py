import math

import numpy as np
import pytest

from surgesim.histogram import Histogram, bucket_bounds, bucket_of


def test_percentiles_track_exact_quantiles_within_one_percent():
    rng = np.random.default_rng(3)
    samples = rng.lognormal(mean=math.log(0.05), sigma=0.8, size=200_000)
    h = Histogram()
    h.record(samples)
    for q in (50, 90, 99, 99.9):
        exact = float(np.percentile(samples, q))
        assert h.percentile(q) == pytest.approx(exact, rel=0.01)
    assert h.count == samples.size
    assert h.mean == pytest.approx(samples.mean(), rel=1e-12)
    assert h.max == samples.max() and h.percentile(100) == samples.max()


def test_every_value_falls_inside_its_bucket():
    values = np.array([0.0, 5e-7, 1e-6, 0.0123, 1.0, 6.0, 3600.0])
    idx = bucket_of(values)
    lower, upper = bucket_bounds(idx)
    assert np.all(lower <= values) and np.all(values < upper)


def test_zeros_are_counted_for_probability_of_waiting():
    h = Histogram()
    h.record(np.zeros(700))
    h.record(np.full(300, 0.2))
    assert h.fraction_above(0.0) == pytest.approx(0.3)
    assert h.percentile(50) == 0.0


def test_bulk_counts_and_merge_equal_individual_records():
    a, b = Histogram(), Histogram()
    a.record_counts(0.04, 1000)
    b.record(np.full(1000, 0.04))
    assert np.array_equal(a.counts, b.counts) and a.total == pytest.approx(b.total)
    a.merge(b)
    assert a.count == 2000 and a.percentile(99) == pytest.approx(0.04, rel=0.01)


def test_empty_histogram_reports_nan():
    assert math.isnan(Histogram().percentile(99))
    assert math.isnan(Histogram().mean)
