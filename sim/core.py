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


def sample(latency, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws of a schema Latency: log-normal fitted to p50/p99, or a constant."""
    if latency is None or n == 0:
        return np.zeros(n)
    if isinstance(latency, dict):  # a schema default_factory left unvalidated
        from surgesim.schema import Latency

        latency = Latency.model_validate(latency)
    if latency.sigma == 0.0:
        return np.full(n, float(latency.p50))
    return float(latency.p50) * np.exp(latency.sigma * rng.standard_normal(n))


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
            attrs=np.broadcast_to(np.asarray(attrs, dtype=np.int32), (n,)).copy(),
            key=np.broadcast_to(np.asarray(key, dtype=np.int64), (n,)).copy(),
            attempt=np.broadcast_to(np.asarray(attempt, dtype=np.int16), (n,)).copy(),
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
