"""Bounds the simulator can honour, checked by `surgesim validate`.

Each field carries its own range (in the models); this module holds the limits that span
fields or files: a source's peak arrival rate is its base rate x its curve's peak x every
wave that can touch it x traffic.multiplier, and a run's metric windows are duration / step.
A file within these limits runs in `surgesim sim` (tests/unit/test_schema_fuzz.py checks it
over the schema itself); beyond them it is refused here, not by a traceback mid-run."""

from __future__ import annotations

from typing import Any, Iterator

MAX_DURATION_S = 366 * 86400.0
"""Any duration in the three files (latencies, timeouts, offsets): at most a year."""
MAX_RATE_PER_S = 1e7
"""Any rate written in the files (`1600/s`, wave `rates`, rate limits, BigQuery rows/s)."""
MAX_SOURCE_RATE_PER_S = 1e6
"""A source's peak arrivals per second after curve, waves and multiplier. The simulator
draws each step's arrivals as arrays, so this bounds one step's memory (1e6 arrivals at
step 1s, a few tens of MB)."""
MAX_WINDOWS = 500_000
"""duration / step: every counter and gauge keeps one value per window (5.8 days at 1s)."""
MAX_JOB_BATCHES = 1_000_000
"""items / batch_size of one Cloud Run Job execution: each batch is a simulated event."""
MAX_FAN_OUT = 1000
"""A publish step's `count` per handled message."""
MAX_POISON = 1_000_000
"""A poison_message fault's `count`."""


def _curve_peak(sc: Any, src: Any) -> tuple[float, float]:
    """(peak, mean) of the source's curve multiplier, (1, 1) without one."""
    if src.curve is None or src.curve not in sc.traffic.curves:
        return 1.0, 1.0
    curve = sc.traffic.curves[src.curve]
    return max(v for _, v in curve.points), curve.mean()


def source_peak_rate(sc: Any, src: Any) -> float:
    """An upper bound of the source's arrivals per second at any time of the run."""
    if src.kind in ("once", "schedule"):
        return 0.0
    peak, mean = _curve_peak(sc, src)
    if src.kind == "fleet":
        rate = src.base_rate * min(1.0, peak)
    elif src.per_day is not None:
        rate = src.base_rate * (peak / mean if mean > 0 else 0.0)
    else:
        rate = src.base_rate * peak
    factor = 1.0
    for wave in sc.traffic.waves:
        if src.name in wave.rates:
            rate = max(rate, wave.rates[src.name])
        if src.name in wave.multiply:
            factor *= max(1.0, wave.multiply[src.name])
    return rate * factor * sc.traffic.multiplier


def scenario_limit_problems(sc: Any) -> Iterator[tuple[tuple, str]]:
    windows = sc.duration / min(sc.step, sc.duration)
    if windows > MAX_WINDOWS:
        yield ("step",), (f"duration / step is {windows:,.0f} metric windows; at most {MAX_WINDOWS:,}: "
                          f"make step at least {sc.duration / MAX_WINDOWS:.3g}s")
    for i, src in enumerate(sc.traffic.sources):
        peak = source_peak_rate(sc, src)
        if peak > MAX_SOURCE_RATE_PER_S:
            yield ("traffic", "sources", i), (
                f"source {src.name!r} peaks at {peak:.4g}/s (rate x curve peak x waves x traffic.multiplier); "
                f"the simulator takes at most {MAX_SOURCE_RATE_PER_S:,.0f}/s per source")


__all__ = ["MAX_DURATION_S", "MAX_FAN_OUT", "MAX_JOB_BATCHES", "MAX_POISON", "MAX_RATE_PER_S", "MAX_SOURCE_RATE_PER_S",
           "MAX_WINDOWS", "scenario_limit_problems", "source_peak_rate"]
