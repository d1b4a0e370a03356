"""A handler's steps run over a batch of messages at once.

Phase one (`run`) samples every step's duration per message and decides failures; it
uses each message's arrival time for anything time-dependent (fault windows, rate-limit
seconds, debounce), because the start time is only known after queueing. Phase two
(`apply`) happens once the queue has given start times: each step's effects (writes,
publishes, change events) land at start + the step's cumulative end offset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from surgesim.sim.core import Batch, sample
from surgesim.sim.faults import failed_check_attrs, failed_jobs, job_delays

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


@dataclass
class _Pass:
    """One batch going through the steps (Handler.run): what each step reads and updates."""
    b: Batch
    n: int
    offs: np.ndarray  # each message's time spent so far
    fail: np.ndarray
    alive: np.ndarray
    full: bool  # every message still running (tracked, not recomputed per step)
    effects: list[Effect] = field(default_factory=list)
    job_done: np.ndarray | None = None  # a bigquery job step's completion time, for a later poll
    job_failed: np.ndarray | None = None  # its job ends DONE with an errorResult (bigquery_job_failure)

    def failed(self, bad: np.ndarray) -> None:
        """These messages fail here: they run no later step."""
        if bad.size:
            self.fail[bad] = True
            self.alive[bad] = False
            self.full = False


class StepKind:
    """One kind of handler step in the simulator: `run` samples its duration for the
    messages `idx` (arriving at `tt`) and may fail them or record an Effect; `apply` lands
    an Effect once start times are known. Registered in STEP_KINDS under the schema's name."""
    kind: ClassVar[str] = ""

    def time_dependent(self, spec, debounce_s: float) -> bool:
        """Whether the step depends on when the message starts (the node then estimates starts)."""
        return False

    def run(self, h: "Handler", p: _Pass, step, spec, idx: np.ndarray, tt: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply(self, h: "Handler", ef: Effect, b: Batch, idx: np.ndarray, times: np.ndarray) -> None:
        pass


STEP_KINDS: dict[str, StepKind] = {}


def register(cls: type[StepKind]) -> type[StepKind]:
    STEP_KINDS[cls.kind] = cls()
    return cls


@register
class Cpu(StepKind):
    kind = "cpu"

    def run(self, h, p, step, spec, idx, tt):
        return sample(spec, idx.size, h.rng)


@register
class Sleep(Cpu):
    kind = "sleep"


@register
class Firestore(StepKind):
    kind = "firestore"

    def time_dependent(self, spec, debounce_s):
        return spec.op != "read" and bool(spec.key or (spec.debounce and debounce_s > 0))

    def run(self, h, p, step, spec, idx, tt):
        eng, rng, m = h.eng, h.rng, idx.size
        is_write = spec.op != "read"
        op_latency = getattr(eng.system.stores.firestore_latency, spec.op)
        if is_write and spec.debounce and h.debounce_s > 0:
            do = eng.stores.debounce(h.owner, spec.collection, p.b.key[idx], tt, h.debounce_s)
            lat = np.zeros(m)
            lat[do] = sample(op_latency, int(np.count_nonzero(do)), rng)
            done = idx[do]
            p.effects.append(Effect("firestore", step, spec, done, p.offs[done] + lat[do]))
            return lat
        lat = sample(op_latency, m, rng)
        if is_write and spec.key and not spec.debounce:
            lat += eng.stores.contention(spec.collection, p.b.key[idx], tt)
        p.effects.append(Effect("firestore", step, spec, idx, p.offs[idx] + lat))
        return lat

    def apply(self, h, ef, b, idx, times):
        h.eng.stores.firestore_op(ef.spec, times, b.key[idx], b.pub[idx])


@register
class Call(StepKind):
    kind = "call"

    def time_dependent(self, spec, debounce_s):
        return True

    def run(self, h, p, step, spec, idx, tt):
        lat, ok = h.eng.call(spec.api, tt, p.b.attrs[idx], spec.timeout, h.rng)
        p.failed(idx[~ok])
        return lat


@register
class Publish(StepKind):
    kind = "publish"

    def run(self, h, p, step, spec, idx, tt):
        p.effects.append(Effect("publish", step, spec, idx, p.offs[idx].copy()))
        return np.zeros(idx.size)

    def apply(self, h, ef, b, idx, times):
        eng, spec = h.eng, ef.spec
        if spec.fraction < 1.0:
            sel = h.rng.random(idx.size) < spec.fraction
            idx, times = idx[sel], times[sel]
        if spec.count > 1:
            eng.guard.expect(idx.size * spec.count)  # before the arrays exist
            idx, times = np.repeat(idx, spec.count), np.repeat(times, spec.count)
        if idx.size:
            eng.broker.publish(spec.topic, Batch.new(times + spec.delay, h.out_attrs(ef.step, spec, b.attrs[idx]), b.key[idx]))


@register
class Bigquery(StepKind):
    kind = "bigquery"

    def time_dependent(self, spec, debounce_s):
        return spec.op == "job"

    def run(self, h, p, step, spec, idx, tt):
        bq, rng, m = h.eng.system.stores.bigquery_latency, h.rng, idx.size
        lat = sample(bq.query if spec.op == "query" else bq.insert, m, rng)
        if spec.op == "job":
            done = np.full(p.n, np.nan)
            done[idx] = tt + lat + sample(spec.duration, m, rng)
            slow = job_delays(h, tt + lat)
            if slow is not None:
                done[idx] += slow
            # run time, jobs.insert -> DONE: the `bigquery_job.SERVICE` SLOs' histogram
            h.eng.metrics.record(f"bigquery_job/{h.owner}", float(tt.min()), done[idx] - (tt + lat))
            p.job_done = done
            p.job_failed = failed_jobs(h, p.n, idx, tt + lat)
        p.effects.append(Effect("bigquery", step, spec, idx, p.offs[idx] + lat))
        return lat

    def apply(self, h, ef, b, idx, times):
        if ef.spec.op == "insert" and ef.spec.table:
            h.eng.stores.bigquery_rows(ef.spec.table, times, ef.spec.rows)


@register
class Storage(StepKind):
    kind = "storage"

    def run(self, h, p, step, spec, idx, tt):
        lat = np.full(idx.size, STORAGE_BASE_S + spec.bytes / STORAGE_BYTES_PER_S)
        p.effects.append(Effect("storage", step, spec, idx, p.offs[idx] + lat))
        return lat

    def apply(self, h, ef, b, idx, times):
        h.eng.stores.storage_write(ef.spec, times, b.key[idx])


@register
class Poll(StepKind):
    kind = "poll"

    def run(self, h, p, step, spec, idx, tt):
        p.effects.append(Effect("poll", step, spec, idx, p.offs[idx].copy(), (p.job_done, p.job_failed)))
        return np.zeros(idx.size)

    def apply(self, h, ef, b, idx, times):
        (job_done, job_failed), spec = ef.extra, ef.spec
        if job_done is None:
            return
        waits = np.nan_to_num(job_done[idx] - times, nan=0.0)
        polls = np.maximum(1, np.ceil(waits / spec.every)).astype(np.int64)
        rep = np.repeat(np.arange(idx.size), polls)
        k = np.arange(rep.size) - np.repeat(np.cumsum(polls) - polls, polls) + 1
        at = times[rep] + k * spec.every
        attrs = b.attrs[idx][rep]
        if job_failed is not None:
            # the check that finds the job DONE with an errorResult: its consumer fails it
            last = (k == polls[rep]) & job_failed[idx][rep]
            if last.any():
                attrs[last] = failed_check_attrs(h.eng, attrs[last])
        h.eng.broker.publish(spec.topic, Batch.new(at, attrs, b.key[idx][rep]))


@register
class Vector(StepKind):
    kind = "vector"

    def run(self, h, p, step, spec, idx, tt):
        return sample(spec.latency, idx.size, h.rng)


@register
class Sql(StepKind):
    """A relational-store operation (sim/sql.py): waits for a pooled connection, holds it
    until its rows commit at the database's write capacity; a pool timeout fails it."""
    kind = "sql"

    def time_dependent(self, spec, debounce_s):
        return True

    def run(self, h, p, step, spec, idx, tt):
        db = h.eng.sql[spec.db]
        lat, ok = db.run(tt, sample(getattr(db.spec.latency, spec.op), idx.size, h.rng), spec.writes)
        p.failed(idx[~ok])
        return lat


class Handler:
    def __init__(self, eng: "Engine", owner: str, steps: list, debounce_s: float = 0.0):
        self.eng = eng
        self.owner = owner
        self.steps = steps
        self.debounce_s = debounce_s
        self.rng = eng.rng(f"handler:{owner}")
        self._attr_map: dict[int, np.ndarray] = {}  # per publish step: input set id -> output set id
        self._steps = [(st, STEP_KINDS[st.kind], st.spec) for st in steps]  # kinds and schema properties, resolved once
        # Whether any step depends on when the message starts (rate-limit seconds, fault
        # windows, debounce, contention, job completion); if not, the node skips the
        # estimated-start pass.
        self.time_dependent = any(k.time_dependent(spec, debounce_s) for _, k, spec in self._steps)
        self.error_rate = eng.error_rate(owner)

    def run(self, b: Batch, forced_fail: np.ndarray | None = None) -> Result:
        rng = self.rng
        n = len(b)
        fail = np.zeros(n, dtype=bool) if forced_fail is None else forced_fail.copy()
        p = _Pass(b, n, np.zeros(n), fail, ~fail, forced_fail is None or not fail.any())
        if not p.full:
            p.offs[fail] = 0.001  # the bad version raises at once
        for step, kind, spec in self._steps:
            idx = np.arange(n) if p.full else np.nonzero(p.alive)[0]
            if idx.size == 0:
                break
            full = p.full  # as the step found it: a failing call narrows the next step, not this one
            tt = b.t + p.offs if full else b.t[idx] + p.offs[idx]
            lat = kind.run(self, p, step, spec, idx, tt)
            if full:
                p.offs += lat
            else:
                p.offs[idx] += lat
        if self.error_rate > 0:
            err = (rng.random(n) < self.error_rate) & ~p.fail
            p.fail |= err
        return Result(p.offs, p.fail, p.effects)

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
        for ef in res.effects:
            idx = ef.idx
            keep = served[idx] if served is not None else None
            if keep is not None and not keep.all():
                idx, end = idx[keep], ef.end[keep]
            else:
                end = ef.end
            if idx.size == 0:
                continue
            STEP_KINDS[ef.kind].apply(self, ef, b, idx, start[idx] + end)
