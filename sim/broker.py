"""Pub/Sub: topics fan out to every subscription; each subscription filters (real
syntax, evaluated once per distinct attribute set), delivers by push, pull or to
BigQuery, and settles each delivery: ack, nack/expiry with the retry policy's
exponential backoff, dead-letter after max delivery attempts, seek to a time (replay).

Accounting, per subscription: `published` counts every message that reached it (and
every message a seek made deliverable again); each one then ends acked, dead-lettered,
filtered, expired (retention) or still in the backlog."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from surgesim.pubsub_filter import parse_filter
from surgesim.pubsub_push import PushWindow
from surgesim.sim.core import Batch, sample

if TYPE_CHECKING:  # pragma: no cover
    from surgesim.sim.engine import Engine

PUSH_WINDOW_MAX = 1e6
"""Unbounded in practice: production's window keeps up with any publish rate."""
PUSH_ERROR_SHRINK = 0.05
"""Above this fraction of failed or expired pushes in a step, the window halves."""


class SubState:
    def __init__(self, eng: "Engine", sub, plan):
        self.eng = eng
        self.sub = sub
        self.name = sub.name
        self.plan = plan
        self.pred = parse_filter(sub.filter) if sub.filter else None
        self._lut = np.zeros(0, dtype=bool)  # filter verdict per interned attribute set
        self.node = None
        self.ch: int | None = None
        self.workflow = None
        self.hold: list[Batch] = []
        self.inflight: list[tuple[np.ndarray, np.ndarray, float, float, float, bool]] = []
        self._write_rng = eng.rng(f"bigquery-write:{sub.name}")
        self.window = PushWindow(maximum=PUSH_WINDOW_MAX)  # surgesim.pubsub_push: the bridge's model too
        topic_ret = eng.system.topic(sub.topic).retention
        self.retention = sub.retention if topic_ret is None else max(sub.retention, topic_ret)
        self.history: list[Batch] | None = None
        self.history_windows: list[tuple[float, float]] = []
        self.totals = {k: 0 for k in ("published", "delivered", "acked", "nacked", "redelivered", "dead_lettered",
                                      "filtered", "expired", "replayed")}
        self.dl_attempts: list[int] = []
        # (dead-letter publish times, original publish times) when a replay may need them
        self.dead_log: list[tuple[np.ndarray, np.ndarray]] = []
        # When a list: (publish time, key, attribute set) of every acked message, for tests
        # that count deliveries per message.
        self.ack_log: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self.adopted_backlog: int | None = None  # set when another process ran this subscription
        self._step_ok = 0
        self._step_fast = 0
        self._step_bad = 0
        for key in ("delivered", "acked", "nacked", "dead_lettered", "filtered"):
            eng.metrics.declare(key, self.name)

    # ---- flow control ------------------------------------------------------------------

    def cap(self, ready: int = 1) -> int | None:
        if self.sub.delivery == "push":
            return self.window.limit
        if self.sub.delivery == "pull":
            return self.plan.max_outstanding_messages * max(1, ready)
        return None

    # ---- arrival -----------------------------------------------------------------------

    def matches(self, attrs: np.ndarray) -> np.ndarray:
        """Which messages pass the filter: a lookup table over the interned attribute sets,
        so the filter runs once per distinct set and a batch costs one gather."""
        if self.pred is None or attrs.shape[0] == 0:
            return np.ones(attrs.shape[0], dtype=bool)
        sets = self.eng.attrs.sets
        if self._lut.size < len(sets):
            old = self._lut.size
            self._lut = np.concatenate([self._lut, np.array([bool(self.pred(a)) for a in sets[old:]], dtype=bool)])
        return self._lut[attrs]

    def accept(self, b: Batch) -> None:
        m = self.eng.metrics
        n = len(b)
        self.totals["published"] += n
        m.count("_published", self.name, b.t)
        if self.pred is not None and n:
            keep = self.matches(b.attrs)
            nk = int(np.count_nonzero(keep))
            if nk == 0:  # e.g. RouteEtaUpdated at every reactor but none: no gathers
                m.count("filtered", self.name, b.t)
                self.totals["filtered"] += n
                return
            if nk < n:
                m.count("filtered", self.name, b.t[~keep])
                self.totals["filtered"] += n - nk
                b = b.take(np.flatnonzero(keep))
        if self.history is not None and len(b):
            for at, end in self.history_windows:
                inwin = (b.t >= at) & (b.t < end)
                if inwin.any():
                    self.history.append(b.take(np.nonzero(inwin)[0]))
        self.deliver(b)

    def deliver(self, b: Batch) -> None:
        if not len(b):
            return
        if self.sub.delivery == "bigquery" and self.plan.write_latency is not None:
            # the environment's publish-to-row time (a calibrated bridge's paced pulls), per message
            b.t = b.t + sample(self.plan.write_latency, len(b), self._write_rng)
        for at, end in self.eng.broker_down:
            inwin = (b.t >= at) & (b.t < end)
            if inwin.any():
                b.t = np.where(inwin, end, b.t)
        if self.node is not None:
            self.node.enqueue(self.ch, b)
        elif self.workflow is not None:
            self.settle_now(b)
            self.workflow.start_many(b)
        else:
            self.hold.append(b)

    # ---- settling ----------------------------------------------------------------------

    def settle_now(self, b: Batch) -> None:
        """A workflow trigger acks once the execution has started."""
        m = self.eng.metrics
        m.count("delivered", self.name, b.t)
        m.count("acked", self.name, b.t)
        self.totals["delivered"] += len(b)
        self.totals["acked"] += len(b)
        m.record(f"lag/{self.name}", float(b.t.min()), b.t - b.pub)
        self._inflight(b.t, b.pub, True)

    def settle(self, b: Batch, start, done, fail, t0: float, ci: int) -> None:
        eng, m, sub = self.eng, self.eng.metrics, self.sub
        n = len(b)
        m.count("delivered", self.name, start)
        self.totals["delivered"] += n
        self.totals["redelivered"] += int((b.attempt > 1).sum())
        bad = fail
        fail_t = done
        if sub.delivery == "push":
            expired = (done - start) > sub.ack_deadline
            if expired.any():
                bad = bad | expired
                fail_t = np.where(expired, start + sub.ack_deadline, done)
        nbad = int(bad.sum())
        nok = n - nbad
        if nok:
            # The common case (every delivery acked) needs no gathers.
            ok = None if nbad == 0 else ~bad
            dt = done if ok is None else done[ok]
            pub = b.pub if ok is None else b.pub[ok]
            m.count("acked", self.name, dt)
            self.totals["acked"] += nok
            if self.ack_log is not None:
                self.ack_log.append((pub, b.key if ok is None else b.key[ok], b.attrs if ok is None else b.attrs[ok]))
            lag = dt - pub
            if dt.shape[0] and float(dt.max()) >= eng.duration:
                lag = lag[dt < eng.duration]
            m.record(f"lag/{self.name}", t0, lag)
            self._inflight(dt, pub, True)
            if sub.bigquery is not None:
                eng.stores.bigquery_rows(sub.bigquery.table, dt, 1, eng.system.topic(sub.topic).message_bytes)
            if sub.delivery == "push":
                took = done - start if ok is None else (done - start)[ok]
                self._step_fast += int((took <= self.window.slow_s).sum())
        self._step_ok += nok
        self._step_bad += nbad
        if not nbad:
            return
        idx = np.nonzero(bad)[0]
        ft = fail_t[idx]
        m.count("nacked", self.name, ft)
        self.totals["nacked"] += idx.size
        att = b.attempt[idx]
        if sub.dead_letter is not None:
            dead = att >= sub.dead_letter.max_attempts
        else:
            dead = np.zeros(idx.size, dtype=bool)
        if dead.any():
            di = idx[dead]
            dtimes = ft[dead]
            m.count("dead_lettered", self.name, dtimes)
            self.totals["dead_lettered"] += di.size
            self.dl_attempts += np.unique(att[dead]).tolist()
            self._inflight(dtimes, b.pub[di], True)
            if self.history is not None:
                self.dead_log.append((dtimes, b.pub[di]))
            eng.broker.publish(sub.dead_letter.topic, Batch.new(dtimes, b.attrs[di], b.key[di]))
        live = ~dead
        if live.any():
            ri = idx[live]
            rt = ft[live]
            self._inflight(rt, b.pub[ri], False)
            if sub.retry is not None:
                back = np.minimum(sub.retry.max_backoff, sub.retry.min_backoff * 2.0 ** (b.attempt[ri].astype(np.float64) - 1))
            else:
                back = 0.0
            rb = b.take(ri)
            rb.t = rt + back
            rb.attempt = (rb.attempt + 1).astype(np.int16)
            self.deliver(rb)

    def expire(self, times: np.ndarray) -> None:
        self.eng.metrics.count("_expired", self.name, times)
        self.totals["expired"] += times.size

    def _inflight(self, r: np.ndarray, pub: np.ndarray, final: bool) -> None:
        if r.size:
            self.inflight.append((r, pub, float(r.min()), float(r.max()), float(pub.min()), final))

    # ---- per step ----------------------------------------------------------------------

    def end_step(self, k: int, t1: float) -> None:
        oldest = np.inf
        kept = []
        for chunk in self.inflight:
            r, pub, rmin, rmax, pmin, final = chunk
            if rmax <= t1:
                continue
            kept.append(chunk)
            if rmin > t1:
                oldest = min(oldest, pmin)
            else:
                sel = r > t1
                oldest = min(oldest, float(pub[sel].min()))
        if len(kept) > 8:  # merge, so a long backlog costs one array per step, not many
            r = np.concatenate([c[0] for c in kept if c[5]] or [np.zeros(0)])
            p = np.concatenate([c[1] for c in kept if c[5]] or [np.zeros(0)])
            rn = np.concatenate([c[0] for c in kept if not c[5]] or [np.zeros(0)])
            pn = np.concatenate([c[1] for c in kept if not c[5]] or [np.zeros(0)])
            kept = []
            for rr, pp, fin in ((r, p, True), (rn, pn, False)):
                # Entries already resolved (r <= t1) are never read again; dropping them
                # keeps a long run of retries from growing this array (and each step) forever.
                live = rr > t1
                rr, pp = rr[live], pp[live]
                if rr.size:
                    kept.append((rr, pp, float(rr.min()), float(rr.max()), float(pp.min()), fin))
        self.inflight = kept
        if self.node is not None:
            for ci, b in self.node.inbox:
                if ci == self.ch and len(b):
                    oldest = min(oldest, float(b.pub.min()))
        for b in self.hold:
            if len(b):
                oldest = min(oldest, float(b.pub.min()))
        self.eng.metrics.gauge("oldest_unacked", self.name, k, max(0.0, t1 - oldest) if np.isfinite(oldest) else 0.0)
        if self.sub.delivery == "push":
            n = self._step_ok + self._step_bad
            if n:
                if self._step_bad > PUSH_ERROR_SHRINK * n:
                    self.window.on_failure()
                else:
                    self.window.grow(self._step_fast)
        self._step_ok = self._step_fast = self._step_bad = 0

    def structural_backlog(self, end: float) -> int:
        """Messages still unacked at the end, counted from the data structures (the
        conservation check compares this with the counters)."""
        if self.adopted_backlog is not None:
            return self.adopted_backlog
        n = sum(len(b) for b in self.hold)
        if self.node is not None:
            n += sum(len(b) for ci, b in self.node.inbox if ci == self.ch)
        for r, pub, rmin, rmax, pmin, final in self.inflight:
            if final and rmax >= end:
                n += int((r >= end).sum())
        return n

    # ---- replay ------------------------------------------------------------------------

    def seek(self, to: float, now: float, exclude_pub: np.ndarray | None = None,
             only_pub: np.ndarray | None = None) -> np.ndarray | None:
        """Seek to a time: every retained message published since `to` is delivered again at
        `now`, except those whose publish time is in `exclude_pub` (still waiting for their
        next attempt: one message, one more delivery); with `only_pub`, just those messages.
        Returns the publish times re-delivered (None without a retained history)."""
        if not self.history:
            return None
        b = Batch.concat(self.history)
        self.history = [b]
        keep = (b.pub >= to) & (b.pub < now)
        if exclude_pub is not None and exclude_pub.size:
            keep &= ~np.isin(b.pub, exclude_pub)
        if only_pub is not None:
            keep &= np.isin(b.pub, only_pub)
        sel = np.nonzero(keep)[0]
        if sel.size == 0:
            return np.zeros(0)
        again = b.take(sel)
        again.t = np.full(sel.size, now)
        again.attempt = np.ones(sel.size, dtype=np.int16)
        self.totals["published"] += sel.size
        self.totals["replayed"] += sel.size
        self.eng.metrics.count("_published", self.name, again.t)
        self.deliver(again)
        return again.pub

    def dead_letters_published(self, since: float, until: float, after: int | None = None):
        """When this subscription dead-lettered the messages originally published in
        [since, until): the publish times of their copies on the dead-letter topic. With
        `after` (an earlier len(dead_log)), only those logged since, as (dead-letter publish
        times, original publish times)."""
        log = self.dead_log if after is None else self.dead_log[after:]
        dead_at = np.concatenate([d for d, _ in log]) if log else np.zeros(0)
        orig = np.concatenate([o for _, o in log]) if log else np.zeros(0)
        sel = (orig >= since) & (orig < until)
        return dead_at[sel] if after is None else (dead_at[sel], orig[sel])

    def ack_held(self, now: float, published: np.ndarray) -> int:
        """Ack (and so drop) the held messages published at these times: dead letters a seek
        has already delivered again."""
        if not self.hold or published.size == 0:
            return 0
        b = Batch.concat(self.hold)
        done = np.isin(b.pub, published)
        n = int(done.sum())
        if n:
            rest = b.take(np.nonzero(~done)[0])
            self.hold = [rest] if len(rest) else []
            self.eng.metrics.count("acked", self.name, np.full(n, now))
            self.totals["acked"] += n
        return n


class Broker:
    def __init__(self, eng: "Engine"):
        self.eng = eng
        self.subs: dict[str, SubState] = {}
        self.subs_of: dict[str, list[SubState]] = {t.name: [] for t in eng.system.topics}
        self.topic_totals = {t.name: {"published": 0, "bytes": 0} for t in eng.system.topics}
        for t in eng.system.topics:
            eng.metrics.declare("published", t.name)

    def add(self, state: SubState) -> None:
        self.subs[state.name] = state
        self.subs_of[state.sub.topic].append(state)

    def publish(self, topic: str, b: Batch, size: int | None = None) -> None:
        eng = self.eng
        if not len(b):
            return
        inrun = b.t < eng.duration
        if not inrun.all():
            b = b.take(np.nonzero(inrun)[0])
            if not len(b):
                return
        held = eng.captured.get(topic)
        if held is not None:  # the other partition of a split run publishes these
            held.append(b)
            return
        eng.metrics.count("published", topic, b.t)
        tot = self.topic_totals[topic]
        tot["published"] += len(b)
        tot["bytes"] += len(b) * (size or eng.system.topic(topic).message_bytes)
        subs = self.subs_of[topic]
        for i, s in enumerate(subs):
            # One fan-out: the subscriptions share the message arrays (nothing writes into
            # a batch's arrays in place; changes replace them on the subscription's own Batch).
            s.accept(b if i == len(subs) - 1 else Batch(b.t, b.pub, b.attrs, b.key, b.attempt))
