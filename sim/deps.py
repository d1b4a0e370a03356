"""What handlers touch besides Pub/Sub: Firestore (latency, per-document contention,
debounce, the Eventarc trigger on document change), BigQuery rows, and external APIs
(log-normal latency, error rate, 429 beyond the rate limit, faults on a timeline)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from surgesim.sim.core import Batch, sample
from surgesim.sim.faults import fault_kind

if TYPE_CHECKING:  # pragma: no cover
    from surgesim.sim.engine import Engine

RATE_LIMITED_S = 0.005
"""A 429 comes back fast."""
OUTAGE_S = 0.050
"""During an outage calls fail fast (connection refused / 503)."""


class Stores:
    def __init__(self, eng: "Engine"):
        self.eng = eng
        self.firestore = {c.name: {"reads": 0, "writes": 0} for c in eng.system.stores.firestore}
        self.bigquery = {t.ref: {"rows": 0, "bytes": 0} for t in eng.system.stores.bigquery}
        self._debounce: dict[tuple[str, str], np.ndarray] = {}
        self._doc_free: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for c in eng.system.stores.firestore:
            eng.metrics.declare("firestore_writes", c.name)
        self.triggers = {c.name: [t for t in eng.system.triggers if t.collection == c.name] for c in eng.system.stores.firestore}
        self.bucket_triggers = {b.name: [t for t in eng.system.triggers if t.bucket == b.name]
                                for b in eng.system.stores.storage}

    def firestore_op(self, spec, times: np.ndarray, keys: np.ndarray, pub: np.ndarray | None = None) -> None:
        tot = self.firestore[spec.collection]
        n = times.size * spec.docs
        if spec.op == "read":
            tot["reads"] += n
            return
        tot["writes"] += n
        w = times if spec.docs == 1 else np.repeat(times, spec.docs)
        self.eng.metrics.count("firestore_writes", spec.collection, w)
        fresh = self.eng.freshness.get(spec.collection)
        if fresh is not None and pub is not None:
            fresh.write(times, keys, pub)
        for trig in self.triggers[spec.collection]:
            self.eng.trigger_event(trig, times, keys, spec.change)

    def storage_write(self, spec, times: np.ndarray, keys: np.ndarray) -> None:
        """Objects written to a bucket: each one an event for the bucket's Storage triggers."""
        for trig in self.bucket_triggers.get(spec.bucket, ()):
            self.eng.trigger_event(trig, times, keys, None)

    def debounce(self, owner: str, collection: str, keys: np.ndarray, tt: np.ndarray, interval: float) -> np.ndarray:
        """Which of these keyed writes happen: at most one per key per interval (the
        others only update memory)."""
        m = keys.size
        do = np.zeros(m, dtype=bool)
        if m == 0:
            return do
        kk = np.where(keys < 0, 0, keys)
        state = self._debounce.get((owner, collection))
        top = int(kk.max()) + 1
        if state is None or state.size < top:
            grown = np.full(max(top, 1024), -np.inf)
            if state is not None:
                grown[: state.size] = state
            state = self._debounce[(owner, collection)] = grown
        order = np.argsort(tt, kind="stable")
        ks, ts = kk[order], tt[order]
        remaining = np.arange(m)  # positions in time order
        first = np.empty(state.size, dtype=np.int64)
        while remaining.size:
            ok = ts[remaining] >= state[ks[remaining]]
            remaining = remaining[ok]
            if remaining.size == 0:
                break
            # The earliest remaining write of each key (a scatter-min, not a sort).
            kr = ks[remaining]
            pos = np.arange(remaining.size)
            first[kr] = remaining.size
            np.minimum.at(first, kr, pos)
            lead = first[kr] == pos
            w = remaining[lead]
            do[order[w]] = True
            state[ks[w]] = ts[w] + interval
            remaining = remaining[~lead]
        return do

    def contention(self, collection: str, keys: np.ndarray, tt: np.ndarray) -> np.ndarray:
        """Extra wait for writes to one document beyond per_document_writes per second:
        each document admits one write per 1/rate seconds, in time order. Vectorised in
        rounds: each round takes the earliest remaining write of every document."""
        extra = np.zeros(keys.size)
        order = np.argsort(tt, kind="stable")
        order = order[keys[order] >= 0]
        if order.size == 0:
            return extra
        gap = 1.0 / self.eng.system.stores.firestore_latency.per_document_writes
        ks, ts = keys[order], tt[order]
        free, first = self._documents(collection, int(ks.max()) + 1)
        remaining = np.arange(order.size)  # positions in time order
        while remaining.size:
            kr = ks[remaining]
            first[kr] = order.size
            np.minimum.at(first, kr, remaining)
            lead = first[kr] == remaining
            w = remaining[lead]
            kw, tw = ks[w], ts[w]
            start = np.maximum(tw, free[kw])
            free[kw] = start + gap
            extra[order[w]] = start - tw
            remaining = remaining[~lead]
        return extra

    def _documents(self, collection: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Per document of a collection: when it next admits a write, and scratch space."""
        free, first = self._doc_free.get(collection, (None, None))
        if free is None or free.size < size:
            grown = np.full(max(size, 2 * (free.size if free is not None else 512)), -np.inf)
            if free is not None:
                grown[: free.size] = free
            free, first = grown, np.empty(grown.size, dtype=np.int64)
            self._doc_free[collection] = (free, first)
        return free, first

    def bigquery_rows(self, table: str, times: np.ndarray, rows: int, row_bytes: int = 200) -> None:
        tot = self.bigquery.setdefault(table, {"rows": 0, "bytes": 0})
        tot["rows"] += times.size * rows
        tot["bytes"] += times.size * rows * row_bytes


class Api:
    def __init__(self, eng: "Engine", api, faults: list):
        self.eng = eng
        self.api = api
        self.faults = faults
        self.used: dict[int, int] = {}
        self.totals = {"calls": 0, "errors": 0, "rate_limited": 0}

    def call(self, tt: np.ndarray, timeout: float | None, rng: np.random.Generator,
             latency=None) -> tuple[np.ndarray, np.ndarray]:
        api = self.api
        m = tt.size
        lat = sample(latency or api.latency, m, rng)
        err_rate = np.full(m, api.error_rate)
        outage = np.zeros(m, dtype=bool)
        for f in self.faults:
            end = f.end if f.end is not None else np.inf
            inwin = (tt >= f.at) & (tt < end)
            if not inwin.any():
                continue
            fault_kind(f).on_call(f, tt, inwin, lat, err_rate, outage, rng)
        err = rng.random(m) < err_rate
        limited = self._rate_limit(tt) if api.rate_limit is not None else np.zeros(m, dtype=bool)
        lat = np.where(outage, np.minimum(lat, OUTAGE_S), lat)
        lat = np.where(limited, RATE_LIMITED_S, lat)
        ok = ~(err | outage | limited)
        if timeout is not None:
            slow = lat > timeout
            if slow.any():
                lat = np.where(slow, timeout, lat)
                ok &= ~slow
        self.totals["calls"] += m
        self.totals["errors"] += int((~ok).sum())
        self.totals["rate_limited"] += int(limited.sum())
        return lat, ok

    def _rate_limit(self, tt: np.ndarray) -> np.ndarray:
        limit = self.api.rate_limit
        sec = np.floor(tt).astype(np.int64)
        order = np.argsort(tt, kind="stable")
        ss = sec[order]
        if ss[0] == ss[-1]:  # the usual small batch: one second
            u = int(ss[0])
            prior = self.used.get(u, 0)
            limited = np.empty(ss.size, dtype=bool)
            limited[order] = np.arange(prior, prior + ss.size) >= limit
            self.used[u] = prior + ss.size
        else:
            uniq, first, counts = np.unique(ss, return_index=True, return_counts=True)
            prior = np.array([self.used.get(u, 0) for u in uniq.tolist()], dtype=np.int64)
            rank = np.arange(ss.size) - np.repeat(first, counts) + np.repeat(prior, counts)
            limited = np.empty(ss.size, dtype=bool)
            limited[order] = rank >= limit
            for u, p, c in zip(uniq.tolist(), prior.tolist(), counts.tolist()):
                self.used[u] = p + c
        if len(self.used) > 4096:
            cut = int(ss.min()) - 60
            self.used = {k: v for k, v in self.used.items() if k >= cut}
        return limited


def service_call(eng: "Engine", name: str, tt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A handler step calling another Cloud Run service: one request each, handled inline."""
    node = eng.nodes[name]
    lat, ok = np.zeros(tt.size), np.ones(tt.size, dtype=bool)
    for i, t in enumerate(tt.tolist()):
        done, good = node.call_inline(t, None)
        lat[i], ok[i] = done - t, good
    return lat, ok


__all__ = ["Api", "Batch", "Stores", "service_call"]
