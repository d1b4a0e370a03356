"""A Cloud Run service (or a BigQuery subscription's writer) as a queue in front of
instances x concurrency slots, with an autoscaler.

Every step the node takes the messages and requests that arrived, samples their handler
times, then gives each a start time: first-come-first-served over the slots, keeping each
slot's next free time (the Kiefer-Wolfowitz recursion). That is exact for FCFS G/G/c, and
computed one of two ways, with the same result:

- vectorised, while no message waits: with every start equal to its arrival, a message
  finds a free slot iff fewer than c of the slots' carried free times and the earlier
  messages' departures (arrival + handler time) lie after its arrival. NumPy checks that
  for the whole step (a sort and two searchsorted calls); the prefix of the step where it
  holds starts at arrival, and the slots then hold the c latest of those free times.
- per message, from the first message that would wait: a heap of the slots' free times,
  ~1 us per message, until a later vectorised check finds the queue gone again. A single
  slot (c = 1, e.g. a BigQuery subscription's writer) needs no heap: its FCFS is the
  Lindley recursion, solved for the step as a cumulative sum (equal up to rounding).

`--exact` forces the per-message loop everywhere (the reference the tests compare with).
Which way each node's messages went is counted in `qstats` (summary.json `engine.nodes`).

The wait is time in the subscription backlog for messages (Pub/Sub holds them until the
subscriber takes them, within flow control) and Cloud Run's pending queue for requests
(rejected with 429 past pending_timeout at max instances)."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from surgesim.sim.core import Batch, sample
from surgesim.sim.handler import Handler

if TYPE_CHECKING:  # pragma: no cover
    from surgesim.sim.broker import SubState
    from surgesim.sim.engine import Engine

EVENTARC_RETENTION_S = 86400.0
"""Eventarc gives up on an event it could not deliver for 24 hours (its Pub/Sub retention)."""
VECTOR_CHUNK = 128
"""Messages queued one by one (doubling while the queue stands) before the vectorised
no-wait check is tried again."""
VECTOR_WINDOW = 4096
"""Arrivals the vectorised check looks at, at least, per try."""


def is_sorted(a: np.ndarray) -> bool:
    return a.shape[0] < 2 or bool((a[1:] >= a[:-1]).all())


def lindley(a: np.ndarray, s: np.ndarray | float, c: int, U: float, tU: float) -> np.ndarray:
    """Waits of sorted arrivals a with handler times s (an array, or one time for all) at
    one server of c-fold speed that already holds U slot-seconds of work at time tU:
    w_i = max(0, w_{i-1} + s_{i-1}/c - (a_i - a_{i-1})), solved as S - min(prefix-min(S), 0)
    with S the cumulative sum. In place where it can be: it runs on every busy step."""
    n = a.shape[0]
    if n == 0:
        return np.zeros(0)
    x = np.empty(n)
    x[0] = U / c - (a[0] - tU)
    tail = x[1:]
    np.subtract(a[:-1], a[1:], out=tail)
    if isinstance(s, np.ndarray):
        tail += s[:-1] / c
    else:
        tail += s / c
    np.cumsum(x, out=x)
    low = np.minimum.accumulate(x)
    np.minimum(low, 0.0, out=low)
    x -= low
    return x


@dataclass
class Channel:
    kind: str  # route | sub | trigger | bigquery
    name: str
    handler: Handler
    sub: "SubState | None" = None


class ServiceNode:
    def __init__(self, eng: "Engine", name: str, plan: Any, *, fixed_slots: int | None = None,
                 fixed_service_s: float | None = None):
        self.eng = eng
        self.name = name
        self.plan = plan
        self.fixed_slots = fixed_slots
        self.fixed_service_s = fixed_service_s
        self.is_service = fixed_slots is None
        self.channels: list[Channel] = []
        self.inbox: list[tuple[int, Batch]] = []
        self.next_due = math.inf
        self.rng = eng.rng(f"service:{name}")
        self.ready = plan.min_instances if self.is_service else 1
        self.pending: list[float] = []  # ready times of starting instances
        self.idle_since: float | None = None
        self.U = 0.0  # unfinished work in slot-seconds at tU (from the slots' free times)
        self.tU = 0.0
        self.heap: list[float] | None = None  # the slots' next free times
        # How this node's messages were queued: in the vectorised no-wait stretches or one
        # by one (summary.json engine.nodes).
        self.waited_now = False
        self.chunk = VECTOR_CHUNK
        self.qstats = {"vectorised": 0, "per_message": 0, "waited": 0, "steps": 0, "steps_queued": 0}
        self.busy = 0.0  # slot-seconds started in this step
        self.down: list[tuple[float, float]] = []
        self.bad: list[tuple[float, float, Any]] = []
        self.last_c = 0
        self.first_ready = 0.0
        self.mean_svc = 0.01
        self.totals = {"requests": 0, "rejected": 0, "errors": 0, "instance_seconds": 0.0, "cold_starts": 0,
                       "peak_instances": self.ready}
        # Per route: what clients got back (the implicit client-errors check, surgesim.checks).
        self.route_totals: dict[str, dict[str, int]] = {}
        # Per trigger: Eventarc deliveries acknowledged or given up (the changes are counted
        # where the trigger fires, Engine.trigger_event).
        self.trigger_totals: dict[str, dict[str, int]] = {}

    def route_count(self, route: str) -> dict[str, int]:
        got = self.route_totals.get(route)
        if got is None:
            got = self.route_totals[route] = {"requests": 0, "ok": 0, "failed": 0, "rejected": 0, "down": 0}
        return got

    def trigger_count(self, trigger: str) -> dict[str, int]:
        got = self.trigger_totals.get(trigger)
        if got is None:
            got = self.trigger_totals[trigger] = {"delivered": 0, "given_up": 0}
        return got

    # ---- wiring ------------------------------------------------------------------------

    def add_channel(self, ch: Channel) -> int:
        self.channels.append(ch)
        return len(self.channels) - 1

    def enqueue(self, ch: int, b: Batch) -> None:
        if len(b):
            self.eng.guard.add_messages(len(b))
            self.inbox.append((ch, b))
            tmin = float(b.t.min())
            if tmin < self.next_due:
                self.next_due = tmin

    def has_due(self, t1: float) -> bool:
        return self.next_due < t1

    # ---- capacity ----------------------------------------------------------------------

    def slots(self) -> int:
        if not self.is_service:
            return self.fixed_slots
        return self.ready * self.plan.concurrency

    def capacity(self, chans: set[int]) -> int:
        c = self.slots()
        cap = 0
        for ci in chans:
            ch = self.channels[ci]
            if ch.kind == "sub" and ch.sub is not None and ch.sub.cap() is not None:
                cap += ch.sub.cap(self.ready)
            else:
                return c
        return min(c, cap) if cap else c

    # ---- the step ----------------------------------------------------------------------

    def process(self, t0: float, t1: float) -> None:
        due: list[tuple[int, Batch]] = []
        keep: list[tuple[int, Batch]] = []
        for ci, b in self.inbox:
            if float(b.t.max()) < t1:
                due.append((ci, b))
                continue
            m = b.t < t1
            if m.all():
                due.append((ci, b))
            elif m.any():
                due.append((ci, b.take(np.nonzero(m)[0])))
                keep.append((ci, b.take(np.nonzero(~m)[0])))
            else:
                keep.append((ci, b))
        self.inbox = keep
        self.next_due = min((float(b.t.min()) for _, b in keep), default=math.inf)
        due = self._apply_down(due, t1)
        due = self._expire(due, t1)
        if not due:
            return
        if len(due) > 1:
            due = self._by_channel(due)
        # handler times per channel
        # Time-dependent parts of a handler (rate-limit seconds, fault windows, debounce)
        # are evaluated at an estimated start: arrival + the backlog already queued.
        # A first Lindley pass with the mean handler time paces these estimates at the
        # rate the slots drain the queue.
        chans = {ci for ci, _ in due}
        a = due[0][1].t if len(due) == 1 else np.concatenate([b.t for _, b in due])
        # One sort serves both Lindley passes; a single batch of fresh arrivals is sorted.
        order = None if is_sorted(a) else np.argsort(a, kind="stable")
        ao = a if order is None else a[order]
        w_est = None
        if any(self.channels[ci].handler is not None and self.channels[ci].handler.time_dependent for ci in chans):
            w_sorted = lindley(ao, self.mean_svc, max(1, self.capacity(chans)), self.U, self.tU)
            if order is None:
                w_est = w_sorted
            else:
                w_est = np.empty_like(w_sorted)
                w_est[order] = w_sorted
        results = []
        pos = 0
        for ci, b in due:
            ch = self.channels[ci]
            n = len(b)
            wb = w_est[pos:pos + n] if w_est is not None else None
            pos += n
            if ch.kind == "bigquery":
                results.append(None)
                continue
            est = b if wb is None or not wb.any() else Batch(b.t + wb, b.pub, b.attrs, b.key, b.attempt)
            results.append(ch.handler.run(est, self._forced_fail(ch, b)))
        if self.fixed_service_s is not None:
            s = np.full(a.shape[0], self.fixed_service_s)
        else:
            s = results[0].svc if len(results) == 1 else np.concatenate([r.svc for r in results])
        kinds = {self.channels[ci].kind == "route" for ci in chans}
        if len(kinds) == 1:
            can_reject = np.full(a.shape[0], kinds.pop())
        else:
            can_reject = np.concatenate([np.full(len(b), self.channels[ci].kind == "route") for ci, b in due])
        if s.shape[0]:
            self.mean_svc = 0.8 * self.mean_svc + 0.2 * float(s.mean())
        start = self._queue(a, s, can_reject, chans, t0, t1, order)
        # outcomes per channel
        pos = 0
        for (ci, b), res in zip(due, results):
            n = len(b)
            st = start[pos:pos + n]
            sv = s[pos:pos + n]
            pos += n
            self._outcome(self.channels[ci], b, res, st, sv, t0)

    @staticmethod
    def _by_channel(due: list[tuple[int, Batch]]) -> list[tuple[int, Batch]]:
        """One batch per channel, in time order, channels in index order: what a step
        does then depends on what arrived, not on which upstream node ran first (nor on
        which process of a split run published it)."""
        by: dict[int, list[Batch]] = {}
        for ci, b in due:
            by.setdefault(ci, []).append(b)
        out = []
        for ci in sorted(by):
            bs = by[ci]
            if len(bs) == 1:
                out.append((ci, bs[0]))
            else:
                b = Batch.concat(bs)
                out.append((ci, b.take(np.argsort(b.t, kind="stable"))))
        return out

    def _apply_down(self, due, t1):
        if not self.down:
            return due
        out = []
        for ci, b in due:
            ch = self.channels[ci]
            for at, end in self.down:
                inwin = (b.t >= at) & (b.t < end)
                if not inwin.any():
                    continue
                if ch.kind == "route":
                    rej = b.t[inwin]
                    self.eng.metrics.count("requests", self.name, rej)
                    self.eng.metrics.count("rejected", self.name, rej)
                    self.totals["requests"] += rej.size
                    self.totals["rejected"] += rej.size
                    rc = self.route_count(ch.name)
                    rc["requests"] += rej.size
                    rc["down"] += rej.size
                    b = b.take(np.nonzero(~inwin)[0])
                else:
                    b.t = np.where(inwin, end, b.t)
            if ch.kind != "route" and len(b):
                later = b.t >= t1
                if later.any():
                    self.enqueue(ci, b.take(np.nonzero(later)[0]))
                    b = b.take(np.nonzero(~later)[0])
            if len(b):
                out.append((ci, b))
        return out

    def _expire(self, due, t1):
        out = []
        for ci, b in due:
            sub = self.channels[ci].sub
            # Due messages arrive before t1, so none can be older than t1 - oldest publish.
            if sub is not None and t1 - float(b.pub.min()) > sub.retention:
                old = (b.t - b.pub) > sub.retention
                if old.any():
                    sub.expire(b.t[old])
                    b = b.take(np.nonzero(~old)[0])
            if len(b):
                out.append((ci, b))
        return out

    def _forced_fail(self, ch: Channel, b: Batch) -> np.ndarray | None:
        fail = None
        eng = self.eng
        if ch.kind in ("sub", "trigger") and eng.poison_attr_ids:
            fail = np.isin(b.attrs, list(eng.poison_attr_ids))
        for at, end, pred in self.bad:
            inwin = (b.t >= at) & (b.t < end)
            if inwin.any():
                uniq = np.unique(b.attrs[inwin]).tolist()
                hit = [a for a in uniq if pred(eng.attrs.get(a))]
                if hit:
                    f = inwin & np.isin(b.attrs, hit)
                    fail = f if fail is None else (fail | f)
        return fail

    def _queue(self, a, s, can_reject, chans, t0, t1, order=None) -> np.ndarray:
        n = a.shape[0]
        if self.slots() == 0:
            self._cold_start_now(float(a.min()))
        c = max(1, self.capacity(chans))
        if order is None:
            ao, so, ro = a, s, can_reject
        else:
            ao, so, ro = a[order], s[order], can_reject[order]
        at_max = (not self.is_service) or (self.ready + len(self.pending) >= self.plan.max_instances)
        timeout = self.plan.pending_timeout if self.is_service else math.inf
        rej = ro if at_max else np.zeros(n, bool)
        if self.eng.exact or n <= self.eng.exact_below:
            st = self._exact(ao, so, rej, timeout, c, t0, t1)
            self.qstats["per_message"] += n
        else:
            st = self._vectorised(ao, so, rej, timeout, c, t0, t1)
        q = self.qstats
        q["steps"] += 1
        waited = int(np.count_nonzero(st > ao))
        self.waited_now = waited > 0
        if waited:
            q["waited"] += waited
            q["steps_queued"] += 1
        if order is None:
            start = st
        else:
            start = np.empty(n)
            start[order] = st
        served = ~np.isnan(start)
        self.busy += float(s[served].sum())
        self.last_c = c
        return start

    def _cold_start_now(self, t: float) -> None:
        """Scale from zero: a request starts an instance at once (no scale-up delay)."""
        ready_at = t + float(sample(self.plan.cold_start, 1, self.rng)[0])
        self.ready = 1
        self.totals["cold_starts"] += 1
        self.first_ready = ready_at
        self.U = 0.0
        self.tU = ready_at
        self.heap = [ready_at] * self.slots()

    def _slots_heap(self, c: int, t0: float) -> list[float]:
        """The slots' next free times, resized to c slots (new slots are free at t0; when
        slots go away, the ones that free up first go)."""
        heap = self.heap
        if heap is None:
            base = self.tU + (self.U / c if c else 0.0)
            return [max(base, 0.0)] * c if self.U > 0 else [min(self.tU, t0)] * c
        if len(heap) != c:
            heap = sorted(heap)
            if len(heap) < c:
                heap += [t0] * (c - len(heap))
            else:
                heap = heap[len(heap) - c:]
            heapq.heapify(heap)
        return heap

    def _exact(self, a, s, rej, timeout, c, t0, t1) -> np.ndarray:
        heap = self._slots_heap(c, t0)
        out = np.empty(a.shape[0])
        al, sl, rl = a.tolist(), s.tolist(), rej.tolist()
        replace = heapq.heapreplace
        for i in range(len(al)):
            ai = al[i]
            f = heap[0]
            st = f if f > ai else ai
            if rl[i] and st - ai > timeout:
                out[i] = np.nan
                continue
            replace(heap, st + sl[i])
            out[i] = st
        self.heap = heap
        self.U = sum(f - t1 for f in heap if f > t1)
        self.tU = t1
        return out

    def _vectorised(self, a, s, rej, timeout, c, t0, t1) -> np.ndarray:
        """The same FCFS starts as _exact: vectorised over the stretches where nobody waits,
        per message where a queue stands. Tries the vectorised check again after each
        per-message chunk, the chunk doubling while the queue persists."""
        n = a.shape[0]
        heap = self._slots_heap(c, t0)
        if c == 1 and not rej.any():
            # One slot: FCFS is the Lindley recursion itself, solved as a cumulative sum
            # (equal to the heap up to rounding, ~1e-15 s), queue or not.
            out = a + lindley(a, s, 1, 0.0, heap[0])
            self.heap = [float(out[-1] + s[-1])]
            self.qstats["vectorised"] += n
            self.U = max(0.0, self.heap[0] - t1)
            self.tU = t1
            return out
        out = np.empty(n)
        i, chunk = 0, self.chunk
        q = self.qstats
        while i < n:
            # No queue standing: check the whole rest at once. A queue standing: a window
            # at a time (a stretch's verdict needs only what came before it), so the
            # checks cost little more than the loop itself.
            w = n if chunk == VECTOR_CHUNK else min(n, i + max(VECTOR_WINDOW, 8 * chunk))
            k = self._no_wait_prefix(a[i:w], s[i:w], heap, c)
            if k:
                out[i:i + k] = a[i:i + k]
                freed = np.concatenate([np.asarray(heap), a[i:i + k] + s[i:i + k]])
                if freed.shape[0] > c:
                    freed = np.partition(freed, freed.shape[0] - c)[freed.shape[0] - c:]
                heap = freed.tolist()
                heapq.heapify(heap)
                q["vectorised"] += k
                i += k
                if i == w:
                    continue  # the whole window started at arrival
            chunk = VECTOR_CHUNK if k >= VECTOR_CHUNK else 2 * chunk
            j = min(n, i + chunk)
            self.heap = heap
            out[i:j] = self._exact(a[i:j], s[i:j], rej[i:j], timeout, c, t0, t1)
            heap = self.heap
            q["per_message"] += j - i
            i = j
        self.chunk = chunk  # a queue that stood at the step's end is likely there next step
        self.heap = heap
        self.U = sum(f - t1 for f in heap if f > t1)
        self.tU = t1
        return out

    @staticmethod
    def _no_wait_prefix(a, s, heap: list[float], c: int) -> int:
        """How many of the sorted arrivals a, from the first, start at arrival. With no
        wait before message i, the slots busy at a_i are the carried free times after a_i
        plus the earlier departures a_j + s_j after a_i; i waits iff that is c or more.
        (Departures equal to a_i count as busy: the check may stop early, never late.)
        A cheaper bound first: the earlier departures after a_i are at most the arrivals
        within the longest handler time before a_i (no sort needed)."""
        n = a.shape[0]
        hs = np.sort(np.asarray(heap))
        m = int(np.searchsorted(a, hs[-1], side="left")) if hs.shape[0] else 0  # carried slots matter before hs[-1]
        busy = np.arange(n) - np.searchsorted(a, a - float(s.max()), side="right")
        np.maximum(busy, 0, out=busy)  # ties when every handler time is 0
        if m:
            busy[:m] += c - np.searchsorted(hs, a[:m], side="right")
        if int(busy.max(initial=0)) < c:
            return n
        busy = np.arange(n) - np.searchsorted(np.sort(a + s), a, side="left")
        if m:
            busy[:m] += c - np.searchsorted(hs, a[:m], side="right")
        bad = np.flatnonzero(busy >= c)
        return int(bad[0]) if bad.size else n

    # ---- outcomes ----------------------------------------------------------------------

    def _outcome(self, ch: Channel, b: Batch, res, start, svc, t0: float) -> None:
        eng = self.eng
        m = eng.metrics
        # Only requests can be rejected (start NaN); messages always get a start.
        served = ~np.isnan(start) if ch.kind == "route" else None
        done = start + svc
        if self.is_service:
            # Queueing delay at this node: from arrival (a request's send, a message's
            # delivery time) to the start on a slot. P(wait) reads bucket 0 (no wait).
            path = f"wait/{self.name}.{ch.name}"
            if not self.waited_now:
                m.record_zeros(path, t0, len(b) if served is None else int(np.count_nonzero(served)))
            else:
                wait = start - b.t
                m.record(path, t0, wait if served is None or served.all() else wait[served])
        fail = res.fail if res is not None else np.zeros(len(b), bool)
        if res is not None:
            ch.handler.apply(res, b, start if served is None or served.all() else np.where(served, start, 0.0), served)
        if ch.kind == "route":
            m.count("requests", self.name, b.t)
            self.totals["requests"] += len(b)
            rej = ~served
            if rej.any():
                m.count("rejected", self.name, b.t[rej])
                self.totals["rejected"] += int(rej.sum())
            bad = served & fail
            if bad.any():
                m.count("errors", self.name, done[bad])
                self.totals["errors"] += int(bad.sum())
            rc = self.route_count(ch.name)
            nrej, nbad = int(rej.sum()), int(bad.sum())
            rc["requests"] += len(b)
            rc["rejected"] += nrej
            rc["failed"] += nbad
            rc["ok"] += len(b) - nrej - nbad
            m.record(f"latency/{self.name}.{ch.name}", t0, (done - b.pub)[served])
            return
        if ch.kind == "trigger":
            m.count("requests", self.name, start)
            self.totals["requests"] += len(b)
            tc = self.trigger_count(ch.name)
            nfail = int(fail.sum())
            tc["delivered"] += len(b) - nfail
            if nfail < len(b):
                m.record(f"lag/{ch.name}", t0, (done - b.pub)[~fail])
            if nfail:
                m.count("errors", self.name, done[fail])
                self.totals["errors"] += nfail
                fb = b.take(np.nonzero(fail)[0])
                retry = eng.triggers[ch.name].retry  # Eventarc's backoff (10 s doubling to 600 s by default)
                back = np.minimum(retry.max_backoff, retry.min_backoff * 2.0 ** (fb.attempt - 1))
                fb.t = done[fail] + back
                fb.attempt = fb.attempt + 1
                old = fb.t - fb.pub > EVENTARC_RETENTION_S
                if old.any():
                    tc["given_up"] += int(old.sum())
                    fb = fb.take(np.nonzero(~old)[0])
                self.enqueue(self.channels.index(ch), fb)
            return
        sub = ch.sub
        if ch.kind == "sub" and self.is_service:
            m.count("requests", self.name, start)
            self.totals["requests"] += len(b)
            if fail.any():
                m.count("errors", self.name, done[fail])
                self.totals["errors"] += int(fail.sum())
        sub.settle(b, start, done, fail, t0, self.channels.index(ch))

    # ---- autoscaler --------------------------------------------------------------------

    def end_step(self, k: int, t0: float, t1: float) -> None:
        m = self.eng.metrics
        dt = t1 - t0
        slots = self.slots()
        if self.is_service:
            self.pending.sort()
            became = [p for p in self.pending if p <= t1]
            if became:
                self.ready += len(became)
                self.pending = self.pending[len(became):]
            plan = self.plan
            demand = (self.busy + self.U) / dt if dt > 0 else 0.0
            desired = math.ceil(demand / (plan.concurrency * plan.target_utilisation) - 1e-9)
            desired = max(plan.min_instances, min(plan.max_instances, desired))
            have = self.ready + len(self.pending)
            if desired > have:
                new = desired - have
                cold = sample(plan.cold_start, new, self.rng)
                self.pending += (t1 + plan.scale_up_delay + cold).tolist()
                self.totals["cold_starts"] += new
                self.idle_since = None
            elif desired < self.ready and not self.pending:
                if self.idle_since is None:
                    self.idle_since = t1
                elif t1 - self.idle_since >= plan.scale_down_delay:
                    self.ready = desired
                    self.idle_since = None
            else:
                self.idle_since = None
            count = self.ready + len(self.pending)
            self.totals["instance_seconds"] += count * dt
            self.totals["peak_instances"] = max(self.totals["peak_instances"], count)
            m.gauge("instances", self.name, k, count)
            m.gauge("utilisation", self.name, k, min(1.0, self.busy / (slots * dt)) if slots and dt > 0 else 0.0)
        self.busy = 0.0

    # ---- synchronous calls (workflow steps) ------------------------------------------

    def call_inline(self, t: float, route: str | None) -> tuple[float, bool]:
        """A workflow step calling this service: one request, handled now. It waits the
        current backlog (unfinished work over the slots) but does not join the queue
        (workflow calls are few)."""
        ch = self._call_channel(route)
        b = Batch.new(np.array([t]))
        res = ch.handler.run(b)
        c = max(1, self.slots())
        wait = max(0.0, self.U / c - (t - self.tU))
        if self.slots() == 0:
            self._cold_start_now(t)
            wait = self.first_ready - t
        start = np.array([t + wait])
        ch.handler.apply(res, b, start, np.ones(1, bool))
        self.eng.metrics.count_at("requests", self.name, t)
        self.totals["requests"] += 1
        self.busy += float(res.svc[0])
        ok = not bool(res.fail[0])
        if not ok:
            self.eng.metrics.count_at("errors", self.name, t + wait + float(res.svc[0]))
            self.totals["errors"] += 1
        return t + wait + float(res.svc[0]), ok

    def _call_channel(self, route: str | None) -> Channel:
        name = f"call:{route}"
        for ch in self.channels:
            if ch.kind == "call" and ch.name == name:
                return ch
        steps = self.eng.exp.steps(self.name)
        routes = self.eng.exp.routes(self.name)
        if not steps and routes:
            pick = next((r for r in routes if route and (r.name == route or r.name.startswith(route))), routes[0])
            steps = pick.steps
        ch = Channel("call", name, Handler(self.eng, self.name, steps, self.eng.exp.debounce(self.name)))
        self.channels.append(ch)
        return ch
