"""Open-model traffic: arrival rates over scenario time and the arrivals drawn from them.

Every source is a non-homogeneous Poisson process (NHPP): its intensity at scenario time t
is the source's base rate, shaped by its clock-day curve, overridden or multiplied by any
wave covering t, then scaled by `traffic.multiplier`. Arrivals never slow down when the
system does (open model), which is what makes backlogs grow honestly.

    fleet   vehicles / ping_interval; a curve is the fraction of vehicles on the road
            (clipped to 0..1: the fleet size is the ceiling)
    rate    `rate` x curve(clock), or `per_day` spread by the curve so that a whole day
            integrates to per_day: per_day / 86400 x curve(clock) / mean(curve)
    once    a single action at `at`: rate 0 (the engine fires it itself)

Waves: during [at, at + duration] a wave's sources run at `rates[name]` (absolute) or at
their shaped rate x `multiply[name]`, blending linearly from the shaped rate over `ramp`
seconds at each end (the ramps lie inside the window). Overlapping waves apply in order.

Pure NumPy; no wall clock. Randomness comes only from the Generator passed in.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DAY = 86400.0


# ---- curves --------------------------------------------------------------------------------


class CurveTable:
    """A schema Curve as arrays: piecewise linear over the clock day, wrapping at midnight."""

    def __init__(self, points: list[tuple[float, float]]):
        pts = sorted((float(t) % DAY if t != DAY else DAY, float(v)) for t, v in points)
        xs = np.array([p[0] for p in pts])
        ys = np.array([p[1] for p in pts])
        # Wrap: the last point before midnight joins the first point after it.
        self.xs = np.concatenate([[xs[-1] - DAY], xs, [xs[0] + DAY]])
        self.ys = np.concatenate([[ys[-1]], ys, [ys[0]]])
        self.knots = xs
        seg = np.diff(self.xs)
        # Exact integral of the piecewise-linear curve over one period [xs0-DAY .. xs0).
        area = float(np.sum(seg * (self.ys[:-1] + self.ys[1:]) / 2.0))
        # The padded table spans xs[-1]-DAY .. xs[0]+DAY, i.e. one day plus the wrap segment once.
        wrap = (xs[0] + DAY) - xs[-1]
        wrap_area = wrap * (ys[-1] + ys[0]) / 2.0
        self.mean = (area - wrap_area) / DAY if len(xs) > 1 else float(ys[0])
        if len(xs) == 1:
            self.xs = np.array([0.0, DAY])
            self.ys = np.array([ys[0], ys[0]])

    def at(self, clock: np.ndarray | float) -> np.ndarray:
        c = np.mod(np.asarray(clock, dtype=np.float64), DAY)
        return np.interp(c, self.xs, self.ys)


def _curve_table(exp: Any, name: str) -> CurveTable:
    return _cached_curve(id(exp.scenario.traffic.curves[name]), exp.scenario.traffic.curves[name])


_CURVES: dict[int, tuple[Any, CurveTable]] = {}


def _cached_curve(key: int, curve: Any) -> CurveTable:
    hit = _CURVES.get(key)
    if hit is not None and hit[0] is curve:
        return hit[1]
    table = CurveTable(list(curve.points))
    _CURVES[key] = (curve, table)
    return table


# ---- rates ---------------------------------------------------------------------------------


def _shaped_rate(exp: Any, source: Any, t: np.ndarray) -> np.ndarray:
    """Base rate with the curve, before waves and multiplier."""
    t = np.asarray(t, dtype=np.float64)
    if source.kind in ("once", "schedule"):
        return np.zeros_like(t)
    base = source.base_rate
    if source.curve is None:
        return np.full_like(t, base)
    table = _curve_table(exp, source.curve)
    shape = table.at(exp.scenario.start_clock + t)
    if source.kind == "fleet":
        return base * np.clip(shape, 0.0, 1.0)
    if source.per_day is not None:
        if table.mean <= 0:
            return np.zeros_like(t)
        return base * shape / table.mean
    return base * shape


def wave_weight(wave: Any, t: np.ndarray) -> np.ndarray:
    """0 outside the wave, 1 on its plateau, linear over `ramp` at each end."""
    t = np.asarray(t, dtype=np.float64)
    start, end = wave.at, wave.at + wave.duration
    inside = (t >= start) & (t <= end)
    ramp = min(wave.ramp, wave.duration / 2.0)
    if ramp <= 0:
        return inside.astype(np.float64)
    w = np.minimum((t - start) / ramp, (end - t) / ramp)
    return np.where(inside, np.clip(w, 0.0, 1.0), 0.0)


def _rates(exp: Any, source: Any, t: np.ndarray) -> np.ndarray:
    rate = _shaped_rate(exp, source, t)
    if source.kind in ("once", "schedule"):
        return rate
    for wave in exp.scenario.traffic.waves:
        if source.name in wave.rates:
            target = np.full_like(rate, wave.rates[source.name])
        elif source.name in wave.multiply:
            target = rate * wave.multiply[source.name]
        else:
            continue
        w = wave_weight(wave, t)
        rate = rate + w * (target - rate)
    return rate * exp.scenario.traffic.multiplier


def source_rate(exp: Any, source: Any, t: float) -> float:
    """Arrivals per second of `source` at scenario time t (seconds from the start)."""
    return float(_rates(exp, source, np.array([float(t)]))[0])


def rate_series(exp: Any, source: Any, t0: float, dt: float, n: int) -> np.ndarray:
    """Rates at the step midpoints t0 + (i + 0.5) * dt, i = 0..n-1."""
    t = t0 + (np.arange(n, dtype=np.float64) + 0.5) * dt
    return _rates(exp, source, t)


_SUBSTEPS = 4


def expected_counts(exp: Any, source: Any, t0: float, dt: float, n: int) -> np.ndarray:
    """The integrated intensity per step: mean arrivals in [t0 + i*dt, t0 + (i+1)*dt).

    Midpoint rule on 4 sub-steps per step, so a wave edge inside a step is counted
    in proportion rather than all-or-nothing."""
    if n <= 0:
        return np.zeros(0)
    sub = rate_series(exp, source, t0, dt / _SUBSTEPS, n * _SUBSTEPS)
    return sub.reshape(n, _SUBSTEPS).mean(axis=1) * dt


def arrival_counts(exp: Any, source: Any, t0: float, dt: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Arrivals per step. Poisson of the integrated intensity; for `arrivals: periodic`,
    deterministic: the running total rounded, carrying the remainder from step to step."""
    mean = expected_counts(exp, source, t0, dt, n)
    if source.arrivals == "periodic":
        # Count how many integer points (offset by 1/2, i.e. rounding) the cumulative
        # intensity passes in each step; the fractional remainder carries over.
        cum = np.floor(np.concatenate([[0.0], np.cumsum(mean)]) + 0.5)
        return np.diff(cum).astype(np.int64)
    return rng.poisson(mean).astype(np.int64)


# ---- per-message arrival times ----------------------------------------------------------------


def _knots(exp: Any, source: Any, t0: float, t1: float) -> np.ndarray:
    """Times in (t0, t1) where the intensity may change slope or jump."""
    pts: list[float] = []
    for wave in exp.scenario.traffic.waves:
        if source.name in wave.rates or source.name in wave.multiply:
            ramp = min(wave.ramp, wave.duration / 2.0)
            pts += [wave.at, wave.at + ramp, wave.at + wave.duration - ramp, wave.at + wave.duration]
    if source.curve is not None:
        table = _curve_table(exp, source.curve)
        first = math.floor((t0 + exp.scenario.start_clock) / DAY) - 1
        last = math.floor((t1 + exp.scenario.start_clock) / DAY) + 1
        for day in range(first, last + 1):
            pts += list(table.knots + day * DAY - exp.scenario.start_clock)
    arr = np.asarray(pts, dtype=np.float64)
    return np.unique(arr[(arr > t0) & (arr < t1)])


def _cells(exp: Any, source: Any, t0: float, t1: float, cell: float) -> np.ndarray:
    n = max(1, int(math.ceil((t1 - t0) / cell)))
    grid = t0 + np.arange(n + 1, dtype=np.float64) * ((t1 - t0) / n)
    return np.unique(np.concatenate([grid, _knots(exp, source, t0, t1)]))


# Within one cell the intensity is a product of at most two linear pieces (curve x wave
# blend); such a quadratic, non-negative on the cell, never exceeds 4/3 of the largest of
# its values at the ends and the middle. 1.5 leaves room for overlapping waves.
_BOUND = 1.5


def arrival_times(exp: Any, source: Any, t0: float, t1: float, rng: np.random.Generator,
                  cell: float = 1.0) -> np.ndarray:
    """Sorted arrival times in [t0, t1): NHPP by thinning (Lewis-Shedler), with a bound per
    cell of `cell` seconds; `arrivals: periodic` gives evenly spaced arrivals instead
    (where the cumulative intensity crosses k + 1/2)."""
    if t1 <= t0 or source.kind in ("once", "schedule"):
        return np.zeros(0)
    edges = _cells(exp, source, t0, t1, cell)
    lo, hi = edges[:-1], edges[1:]
    width = hi - lo
    if source.arrivals == "periodic":
        # Fine piecewise-linear cumulative intensity, inverted at the half-integers.
        fine = _cells(exp, source, t0, t1, min(cell, (t1 - t0)) / 8.0)
        r = _rates(exp, source, fine)
        cum = np.concatenate([[0.0], np.cumsum(np.diff(fine) * (r[:-1] + r[1:]) / 2.0)])
        targets = np.arange(0.5, cum[-1], 1.0)
        return np.interp(targets, cum, fine)
    ends = np.stack([_rates(exp, source, lo + 1e-9 * width), _rates(exp, source, (lo + hi) / 2.0),
                     _rates(exp, source, hi - 1e-9 * width)])
    bound = ends.max(axis=0) * _BOUND
    candidates = rng.poisson(bound * width)
    total = int(candidates.sum())
    if total == 0:
        return np.zeros(0)
    cell_of = np.repeat(np.arange(len(lo)), candidates)
    times = lo[cell_of] + rng.random(total) * width[cell_of]
    keep = rng.random(total) * bound[cell_of] < _rates(exp, source, times)
    out = np.sort(times[keep])
    return out[out < t1]


# ---- keys ----------------------------------------------------------------------------------


def key_space(source: Any) -> int:
    """How many distinct keys a source's messages carry: vehicles for a fleet, else one
    day's volume (a parcel id space), at least 1."""
    if source.kind == "fleet":
        return int(source.vehicles)
    if source.kind == "rate":
        return max(1, int(round(source.base_rate * DAY)))
    return 1


def message_keys(source: Any, n: int, rng: np.random.Generator, sent: int = 0) -> np.ndarray:
    """Key ids for n messages in time order, after `sent` earlier ones of the source. A
    fleet's vehicles (0..vehicles-1) ping in turn, so each pings every vehicles / rate
    seconds (its ping_interval at the base rate), as a tracker on a timer does; uniform
    random keys would make each vehicle's pings Poisson, with gaps of 20 s and more that
    no tracker leaves (and a live map's freshness would show them). Other sources: uniform."""
    if source.kind == "fleet":
        return (np.arange(sent, sent + int(n), dtype=np.int64)) % int(source.vehicles)
    return rng.integers(0, key_space(source), size=int(n), dtype=np.int64)


# ---- payloads (live mode) ---------------------------------------------------------------------

BREEDS = (
    "Labrador Retriever", "German Shepherd", "Golden Retriever", "French Bulldog", "Beagle",
    "Poodle", "Dachshund", "Border Collie", "Boxer", "Siberian Husky", "Staffordshire Terrier",
    "Cocker Spaniel", "Jack Russell Terrier", "Shih Tzu", "Greyhound", "mixed breed",
)
"""Roughly the most common breeds in lost-dog reports; mixed breed is frequent."""

_BREED_WEIGHTS = np.array([9, 7, 6, 5, 5, 4, 4, 4, 3, 3, 3, 3, 3, 2, 2, 20], dtype=np.float64)


def sighting_payloads(n: int, rng: np.random.Generator, clock_date: Any,
                      centre: tuple[float, float] = (51.5072, -0.1276), radius_km: float = 15.0) -> list[dict]:
    """Dog Finder sightings: dicts with sighting_id, sighting_date (YYYY-MM-DD), seen_at
    (ISO 8601 UTC), breed, lat, lng. `clock_date` is a date (sightings spread over that
    day) or a datetime (sightings seen up to an hour before it)."""
    import datetime as dt

    n = int(n)
    if isinstance(clock_date, str):
        clock_date = dt.datetime.fromisoformat(clock_date)
    if isinstance(clock_date, dt.datetime):
        now = clock_date if clock_date.tzinfo else clock_date.replace(tzinfo=dt.timezone.utc)
        offsets = -rng.random(n) * 3600.0
    else:
        now = dt.datetime(clock_date.year, clock_date.month, clock_date.day, tzinfo=dt.timezone.utc)
        offsets = rng.random(n) * (DAY - 1)
    ids = rng.integers(0, 2**63 - 1, size=(n, 2), dtype=np.int64)
    breeds = rng.choice(len(BREEDS), size=n, p=_BREED_WEIGHTS / _BREED_WEIGHTS.sum())
    # Uniform over a disc around the centre (sqrt for uniform area).
    r = radius_km * np.sqrt(rng.random(n))
    theta = rng.random(n) * 2 * np.pi
    lat = centre[0] + (r * np.cos(theta)) / 111.32
    lng = centre[1] + (r * np.sin(theta)) / (111.32 * math.cos(math.radians(centre[0])))
    out = []
    for i in range(n):
        seen = now + dt.timedelta(seconds=float(offsets[i]))
        out.append({
            "sighting_id": f"{ids[i, 0]:016x}{ids[i, 1]:016x}",
            "sighting_date": seen.date().isoformat(),
            "seen_at": seen.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "breed": BREEDS[int(breeds[i])],
            "lat": round(float(lat[i]), 6),
            "lng": round(float(lng[i]), 6),
        })
    return out


__all__ = [
    "CurveTable", "arrival_counts", "arrival_times", "expected_counts", "key_space", "message_keys",
    "rate_series", "sighting_payloads", "source_rate", "wave_weight",
]
