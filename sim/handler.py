"""A handler's steps run over a batch of messages at once.

Phase one (`run`) samples every step's duration per message and decides failures; it
uses each message's arrival time for anything time-dependent (fault windows, rate-limit
seconds, debounce), because the start time is only known after queueing. Phase two
(`apply`) happens once the queue has given start times: each step's effects (writes,
publishes, change events) land at start + the step's cumulative end offset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from surgesim.sim.core import Batch, sample

if TYPE_CHECKING:  # pragma: no cover
    from surgesim.sim.engine import Engine

STORAGE_BASE_S = 0.020
STORAGE_BYTES_PER_S = 200e6
"""Cloud Storage object write: ~20 ms plus ~200 MB/s (no latency field in the schema)."""


@dataclass
class Effect:
    kind: str
    step: object
    spec: object  # step.spec, a schema property resolved once
    idx: np.ndarray  # message indices that executed this step
    end: np.ndarray  # offset from start at which the step ended, per executed message
    extra: object = None


@dataclass
class Result:
    svc: np.ndarray
    fail: np.ndarray
    effects: list[Effect] = field(default_factory=list)


class Handler:
    def __init__(self, eng: "Engine", owner: str, steps: list, debounce_s: float = 0.0):
        self.eng = eng
        self.owner = owner
        self.steps = steps
        self.debounce_s = debounce_s
        self.rng = eng.rng(f"handler:{owner}")
        self._attr_map: dict[int, np.ndarray] = {}  # per publish step: input set id -> output set id
        # Whether any step depends on when the message starts (rate-limit seconds, fault
        # windows, debounce, contention, job completion); if not, the node skips the
        # estimated-start pass.
        self.time_dependent = any(
            st.kind == "call" or (st.kind == "bigquery" and st.spec.op == "job")
            or (st.kind == "firestore" and st.spec.op != "read" and (st.spec.key or (st.spec.debounce and debounce_s > 0)))
            or st.kind == "sql"
            for st in steps)
        self._steps = [(st, st.kind, st.spec) for st in steps]  # schema properties, resolved once
        self.error_rate = eng.error_rate(owner)

    def run(self, b: Batch, forced_fail: np.ndarray | None = None) -> Result:
        eng, rng = self.eng, self.rng
        n = len(b)
        offs = np.zeros(n)
        fail = np.zeros(n, dtype=bool) if forced_fail is None else forced_fail.copy()
        # `full` (every message still running) is tracked, not recomputed per step.
        full = forced_fail is None or not fail.any()
        if not full:
            offs[fail] = 0.001  # the bad version raises at once
        alive = ~fail
        effects: list[Effect] = []
        job_done = None
        for step, kind, spec in self._steps:
            idx = np.arange(n) if full else np.nonzero(alive)[0]
            m = idx.size
            if m == 0:
                break
            tt = b.t + offs if full else b.t[idx] + offs[idx]
            if kind in ("cpu", "sleep"):
                lat = sample(spec, m, rng)
            elif kind == "firestore":
                is_write = spec.op != "read"
                op_latency = getattr(eng.system.stores.firestore_latency, spec.op)
                if is_write and spec.debounce and self.debounce_s > 0:
                    do = eng.stores.debounce(self.owner, spec.collection, b.key[idx], tt, self.debounce_s)
                    lat = np.zeros(m)
                    lat[do] = sample(op_latency, int(np.count_nonzero(do)), rng)
                    done = idx[do]
                    effects.append(Effect("firestore", step, spec, done, offs[done] + lat[do]))
                else:
                    lat = sample(op_latency, m, rng)
                    if is_write and spec.key and not spec.debounce:
                        lat += eng.stores.contention(spec.collection, b.key[idx], tt)
                    effects.append(Effect("firestore", step, spec, idx, offs[idx] + lat))
            elif kind == "call":
                lat, ok = eng.call(spec.api, tt, b.attrs[idx], spec.timeout, rng)
                bad = idx[~ok]
                if bad.size:
                    fail[bad] = True
                    alive[bad] = False
                    full = False
            elif kind == "publish":
                lat = np.zeros(m)
                effects.append(Effect("publish", step, spec, idx, offs[idx].copy()))
            elif kind == "bigquery":
                bq = self.eng.system.stores.bigquery_latency
                if spec.op == "query":
                    lat = sample(bq.query, m, rng)
                else:
                    lat = sample(bq.insert, m, rng)
                if spec.op == "job":
                    done = np.full(n, np.nan)
                    done[idx] = tt + lat + sample(spec.duration, m, rng)
                    job_done = done
                effects.append(Effect("bigquery", step, spec, idx, offs[idx] + lat))
            elif kind == "storage":
                lat = np.full(m, STORAGE_BASE_S + spec.bytes / STORAGE_BYTES_PER_S)
                effects.append(Effect("storage", step, spec, idx, offs[idx] + lat))
            elif kind == "poll":
                lat = np.zeros(m)
                effects.append(Effect("poll", step, spec, idx, offs[idx].copy(), job_done))
            elif kind == "vector":
                lat = sample(spec.latency, m, rng)
            elif kind == "sql":
                db = eng.sql[spec.db]
                lat, ok = db.run(tt, sample(getattr(db.spec.latency, spec.op), m, rng), spec.writes)
                bad = idx[~ok]
                if bad.size:
                    fail[bad] = True
                    alive[bad] = False
                    full = False
            else:  # pragma: no cover - schema forbids
                raise ValueError(kind)
            if full:
                offs += lat
            else:
                offs[idx] += lat
        if self.error_rate > 0:
            err = (rng.random(n) < self.error_rate) & ~fail
            fail |= err
        return Result(offs, fail, effects)

    def out_attrs(self, step, spec, in_ids: np.ndarray) -> np.ndarray:
        """Attribute set ids for a publish step, copying `$attr` values from the input: a
        lookup table per step from input set to output set, filled as sets appear."""
        lut = self._attr_map.get(id(step))
        need = int(in_ids.max()) + 1 if in_ids.shape[0] else 0
        if lut is None or lut.size < need:
            grown = np.full(max(need, 2 * (lut.size if lut is not None else 8)), -1, dtype=np.int32)
            if lut is not None:
                grown[: lut.size] = lut
            lut = self._attr_map[id(step)] = grown
        out = lut[in_ids]
        missing = out < 0
        if missing.any():
            for a in np.unique(in_ids[missing]).tolist():
                src = self.eng.attrs.get(a)
                attrs = {k: (src.get(v[1:], "") if v.startswith("$") else v) for k, v in spec.attributes.items()}
                lut[a] = self.eng.attrs.intern(attrs)
            out = lut[in_ids]
        return out

    def apply(self, res: Result, b: Batch, start: np.ndarray, served: np.ndarray | None) -> None:
        """Effects of the served messages (None: all), at start + each step's end offset."""
        eng, rng = self.eng, self.rng
        for ef in res.effects:
            idx = ef.idx
            keep = served[idx] if served is not None else None
            if keep is not None and not keep.all():
                idx, end = idx[keep], ef.end[keep]
            else:
                end = ef.end
            if idx.size == 0:
                continue
            times = start[idx] + end
            spec = ef.spec
            if ef.kind == "firestore":
                eng.stores.firestore_op(spec, times, b.key[idx], b.pub[idx])
            elif ef.kind == "publish":
                if spec.fraction < 1.0:
                    sel = rng.random(idx.size) < spec.fraction
                    idx, times = idx[sel], times[sel]
                if spec.count > 1:
                    eng.guard.expect(idx.size * spec.count)  # before the arrays exist
                    idx, times = np.repeat(idx, spec.count), np.repeat(times, spec.count)
                if idx.size:
                    eng.broker.publish(spec.topic, Batch.new(times + spec.delay, self.out_attrs(ef.step, spec, b.attrs[idx]), b.key[idx]))
            elif ef.kind == "storage":
                eng.stores.storage_write(spec, times, b.key[idx])
            elif ef.kind == "bigquery":
                if spec.op == "insert" and spec.table:
                    eng.stores.bigquery_rows(spec.table, times, spec.rows)
            elif ef.kind == "poll":
                job_done = ef.extra
                if job_done is None:
                    continue
                waits = np.nan_to_num(job_done[idx] - times, nan=0.0)
                polls = np.maximum(1, np.ceil(waits / spec.every)).astype(np.int64)
                rep = np.repeat(np.arange(idx.size), polls)
                k = np.arange(rep.size) - np.repeat(np.cumsum(polls) - polls, polls) + 1
                at = times[rep] + k * spec.every
                eng.broker.publish(spec.topic, Batch.new(at, b.attrs[idx][rep], b.key[idx][rep]))
