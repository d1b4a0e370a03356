"""Small pieces the engine is built from: seeded random streams, latency sampling,
interned attribute sets, and the struct-of-arrays message batch."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Mapping

import numpy as np


def rng_for(seed: int, name: str) -> np.random.Generator:
    """One Generator per component, derived from the scenario seed and the component's
    name (crc32, not hash(): Python's string hash is salted per process)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())])))


_SAMPLERS: dict[int, tuple[object, object]] = {}


def _sampler(latency):
    """A function (n, rng) -> n draws for one schema Latency, built once per object."""
    hit = _SAMPLERS.get(id(latency))
    if hit is not None and hit[0] is latency:
        return hit[1]
    dist = latency.dist
    if dist is None:
        dist = "lognormal" if latency.sigma > 0 else "constant"
    if dist == "constant":
        v = float(latency.p50)
        fn = lambda n, rng: np.full(n, v)  # noqa: E731
    elif dist == "lognormal":
        p50, sigma = float(latency.p50), float(latency.sigma)

        def fn(n, rng):
            x = rng.standard_normal(n)
            x *= sigma
            np.exp(x, out=x)
            x *= p50
            return x
    elif dist == "exponential":
        mean = float(latency.mean)

        def fn(n, rng):
            x = rng.standard_exponential(n)
            x *= mean
            return x
    elif dist in ("gamma", "erlang"):
        shape = float(latency.k) if dist == "erlang" else 1.0 / float(latency.cv) ** 2
        scale = float(latency.mean) / shape
        fn = lambda n, rng: rng.gamma(shape, scale, n)  # noqa: E731
    elif dist == "uniform":
        lo, hi = float(latency.min), float(latency.max)
        fn = lambda n, rng: rng.uniform(lo, hi, n)  # noqa: E731
    elif dist == "empirical":
        xs, fs = (np.asarray(v, dtype=np.float64) for v in latency.cdf_points())
        fn = lambda n, rng: np.interp(rng.random(n), fs, xs)  # noqa: E731
    else:  # pragma: no cover - the schema allows no other
        raise ValueError(dist)
    _SAMPLERS[id(latency)] = (latency, fn)
    return fn


def sample(latency, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws of a schema Latency (surgesim.schema.common.Latency: constant, log-normal,
    exponential, gamma/Erlang, uniform or empirical), vectorised."""
    if latency is None or n == 0:
        return np.zeros(n)
    if isinstance(latency, dict):  # a schema default_factory left unvalidated
        from surgesim.schema import Latency

        latency = Latency.model_validate(latency)
    return _sampler(latency)(n, rng)


class AttrTable:
    """Attribute sets interned to small ints: filters and `$attr` copies are evaluated once
    per distinct set, not once per message."""

    def __init__(self) -> None:
        self.sets: list[dict[str, str]] = [{}]
        self._index: dict[tuple, int] = {(): 0}

    def intern(self, attrs: Mapping[str, str]) -> int:
        key = tuple(sorted(attrs.items()))
        got = self._index.get(key)
        if got is None:
            got = self._index[key] = len(self.sets)
            self.sets.append(dict(key))
        return got

    def get(self, idx: int) -> dict[str, str]:
        return self.sets[idx]


def _column(v, n: int, dtype) -> np.ndarray:
    if isinstance(v, (int, np.integer)):
        return np.full(n, v, dtype=dtype)
    if isinstance(v, np.ndarray) and v.shape == (n,):
        return v.astype(dtype)  # a copy: batches never share columns they may change
    return np.broadcast_to(np.asarray(v, dtype=dtype), (n,)).copy()


@dataclass
class Batch:
    """Messages (or requests) as parallel arrays. `t` is when each reaches the node (a
    delivery or send time), `pub` the original publish or send time (lag and HTTP latency
    are measured from it), `attempt` the delivery attempt (1-based)."""

    t: np.ndarray
    pub: np.ndarray
    attrs: np.ndarray
    key: np.ndarray
    attempt: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @staticmethod
    def new(t: np.ndarray, attrs: int | np.ndarray = 0, key: int | np.ndarray = -1,
            pub: np.ndarray | None = None, attempt: int | np.ndarray = 1) -> "Batch":
        t = np.asarray(t, dtype=np.float64)
        n = t.shape[0]
        return Batch(
            t=t,
            pub=t.copy() if pub is None else np.asarray(pub, dtype=np.float64),
            attrs=_column(attrs, n, np.int32),
            key=_column(key, n, np.int64),
            attempt=_column(attempt, n, np.int16),
        )

    def take(self, idx: np.ndarray) -> "Batch":
        return Batch(self.t[idx], self.pub[idx], self.attrs[idx], self.key[idx], self.attempt[idx])

    @staticmethod
    def concat(batches: list["Batch"]) -> "Batch":
        if len(batches) == 1:
            return batches[0]
        return Batch(*(np.concatenate([getattr(b, f) for b in batches]) for f in ("t", "pub", "attrs", "key", "attempt")))

    @staticmethod
    def empty() -> "Batch":
        return Batch.new(np.zeros(0))


def sorted_uniform(t0: float, t1: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n sorted uniform times in [t0, t1) without a sort: normalised exponential spacings."""
    if n <= 0:
        return np.zeros(0)
    gaps = rng.standard_exponential(n + 1)
    cum = np.cumsum(gaps)
    return t0 + (t1 - t0) * (cum[:-1] / cum[-1])
