"""A run on two cores: the fleet's telemetry in one process, everything else in another.

At Meridian scale the GPS firehose (~1,640 pings/s all day, through three subscriptions)
costs about as much CPU as every command, event and reactor together, and it barely
depends on them: its consumers read only the telemetry topic, write their own collections
and publish a trickle of events (geofence crossings) to the rest of the system. So the
scenario is cut there. The *upstream* partition runs the fleet sources, their topics and
subscriptions (with the dead-letter topics they feed) and the services that consume only
those; whatever it publishes to other topics is handed over step by step to the
*downstream* partition, which publishes it at the start of the same step, before any
node processes that step. Flow is one way, so the upstream process runs ahead and the
downstream one never waits longer than a chunk of steps.

Both partitions are ordinary Engines built from the whole experiment (same seed, same
per-component random streams); each runs only what it owns. At the end the upstream
engine's counters, gauges, histograms and totals for what it owns are merged into the
downstream engine, which then writes the run directory like any other.

Differences from one process: an event crossing the cut is handled in the first pass of
its step instead of a later one, and its handler's random draws come in a different
order; the outcome is the same in distribution (bench/bench_sim.py split measures it).
The cut is made only when it is exact in structure: nothing downstream publishes to an
upstream topic, writes an upstream collection, calls an upstream service or consumes an
upstream subscription, and upstream services make no synchronous calls. Otherwise the
run stays in one process."""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from surgesim.sim.core import Batch
from surgesim.sim.engine import Engine
from surgesim.sim.faults import fault_kind
from surgesim.sim.guard import Stalled

CHUNK_STEPS = 16
"""Steps of hand-overs sent together (fewer pipe round trips; the downstream process
waits at most this many upstream steps)."""


@dataclass(frozen=True)
class Cut:
    """Where a system is cut: what the upstream partition owns."""

    sources: frozenset[str]
    topics: frozenset[str]
    subscriptions: frozenset[str]
    services: frozenset[str]
    collections: frozenset[str]
    exports: frozenset[str]
    """Topics outside the cut that upstream services publish to."""


def _publish_topics(steps) -> set[str]:
    return {s.spec.topic for s in steps if s.kind in ("publish", "poll")}


def _written(steps) -> set[str]:
    return {s.spec.collection for s in steps if s.kind == "firestore" and s.spec.op != "read"}


def _handlers(exp) -> dict[str, list]:
    """Every service's steps, routes included."""
    out = {}
    for svc in exp.system.services:
        steps = list(exp.steps(svc.name))
        for r in exp.routes(svc.name):
            steps += list(r.steps)
        out[svc.name] = steps
    return out


def find_cut(exp) -> Cut | None:
    """The upstream partition of the fleet sources, or None when the system cannot be cut
    exactly there (or there is nothing on one side)."""
    sysm, sc = exp.system, exp.scenario
    fleet = [s for s in sc.traffic.sources if s.kind == "fleet" and s.publish is not None]
    if not fleet or len(fleet) == len(sc.traffic.sources):
        return None
    services = {s.name for s in sysm.services}
    topics = {s.publish.topic for s in fleet}
    subs: set[str] = set()
    consumers: set[str] = set()
    grew = True
    while grew:
        grew = False
        for sub in sysm.subscriptions:
            if sub.topic in topics and sub.name not in subs:
                subs.add(sub.name)
                grew = True
                if sub.consumer is not None:
                    if sub.consumer not in services:
                        return None  # a workflow consumer: keep one process
                    consumers.add(sub.consumer)
                if sub.dead_letter is not None:
                    topics.add(sub.dead_letter.topic)
    if not consumers:
        return None
    handlers = _handlers(exp)
    exports: set[str] = set()
    collections: set[str] = set()
    for name in consumers:
        steps = handlers[name]
        if exp.routes(name) or any(s.kind == "call" for s in steps):
            return None
        published = _publish_topics(steps)
        if published & topics:
            return None  # a loop back into the cut: keep it simple, one process
        exports |= published
        collections |= _written(steps)
    for sub in sysm.subscriptions:
        if sub.name not in subs and (sub.consumer in consumers or (sub.dead_letter and sub.dead_letter.topic in topics)):
            return None
    if any(t.target in consumers or t.collection in collections for t in sysm.triggers):
        return None
    for name, steps in handlers.items():
        if name in consumers:
            continue
        if _publish_topics(steps) & topics or _written(steps) & collections:
            return None
        if any(s.kind == "call" and s.spec.api in consumers for s in steps):
            return None
    for job in sysm.jobs:
        if _publish_topics(job.steps) & topics or _written(job.steps) & collections:
            return None
    for wf in sysm.workflows:
        if any(st.call in consumers for st in list(wf.steps) + list(wf.compensations)):
            return None
    for src in sc.traffic.sources:
        if src in fleet:
            continue
        if (src.publish is not None and src.publish.topic in topics) or (src.request is not None and src.request.service in consumers):
            return None
    return Cut(frozenset(s.name for s in fleet), frozenset(topics), frozenset(subs), frozenset(consumers),
               frozenset(collections), frozenset(exports))


# ---- the two partitions ----------------------------------------------------------------


@dataclass
class Part:
    """What one engine of a split run owns, and its end of the hand-over."""

    sources: frozenset[str]
    topics: frozenset[str]
    nodes: frozenset[str]
    exports: frozenset[str] = frozenset()
    send: Callable[[int, list], None] | None = None
    receive: Callable[[int], list] | None = None

    def owns_fault(self, f) -> bool:
        return fault_kind(f).owned(self, f)

    def take(self, k: int) -> list:
        return self.receive(k) if self.receive is not None else []

    def hand_over(self, k: int, captured: dict[str, list[Batch]]) -> None:
        if self.send is None:
            return
        out = []
        for topic in sorted(captured):
            out += [(topic, b) for b in captured[topic]]
            captured[topic].clear()
        self.send(k, out)


def _parts(exp, cut: Cut) -> tuple[Part, Part]:
    sysm, sc = exp.system, exp.scenario
    all_topics = frozenset(t.name for t in sysm.topics)
    all_nodes = frozenset(s.name for s in sysm.services)
    up = Part(cut.sources, cut.topics, cut.services, cut.exports)
    down = Part(frozenset(s.name for s in sc.traffic.sources) - cut.sources, all_topics - cut.topics,
                all_nodes - cut.services)
    return up, down


def _owned_entities(eng: Engine, cut: Cut) -> set[str]:
    """Metric entities the upstream engine owns (its services, BigQuery writers, subscriptions)."""
    owned = set(cut.subscriptions) | set(cut.services)
    owned |= {n for n in eng.nodes if n.startswith("bigquery:") and n.split(":", 1)[1] in cut.subscriptions}
    return owned


def _snapshot(eng: Engine, cut: Cut) -> dict:
    m = eng.metrics
    m.flush_counts()
    owned = _owned_entities(eng, cut)
    return {
        "counters": {k: a for k, a in m.counters.items() if a.any()},
        "gauges": {k: a for k, a in m.gauges.items() if k[1] in owned and k[0] != "backlog"},
        "hist_rows": m._hist_rows,
        "hist_totals": m.totals,
        "topic_totals": eng.broker.topic_totals,
        "subs": {n: (st.totals, st.dl_attempts, st.structural_backlog(eng.duration))
                 for n, st in eng.broker.subs.items() if n in cut.subscriptions},
        "nodes": {n: dict(eng.nodes[n].totals) for n in cut.services},
        "qstats": {n: dict(eng.nodes[n].qstats) for n in sorted(owned) if n in eng.nodes},
        "firestore": eng.stores.firestore,
        "bigquery": eng.stores.bigquery,
    }


def _adopt(eng: Engine, snap: dict) -> None:
    """Merge the upstream engine's results into the downstream one."""
    m = eng.metrics
    m.flush_counts()
    for key, arr in snap["counters"].items():
        m._arr(*key)[:] += arr
    m.gauges.update(snap["gauges"])
    m._hist_rows += snap["hist_rows"]
    for path, h in snap["hist_totals"].items():
        mine = m.totals.get(path)
        if mine is None:
            m.totals[path] = h
        else:
            mine.counts += h.counts
            mine.count += h.count
            mine.total += h.total
            mine.min, mine.max = min(mine.min, h.min), max(mine.max, h.max)
    for topic, tot in snap["topic_totals"].items():
        for k, v in tot.items():
            eng.broker.topic_totals[topic][k] += v
    for name, (totals, dl_attempts, backlog) in snap["subs"].items():
        st = eng.broker.subs[name]
        st.totals, st.dl_attempts, st.adopted_backlog = dict(totals), list(dl_attempts), int(backlog)
    for name, totals in snap["nodes"].items():
        eng.nodes[name].totals = totals
    for name, q in snap["qstats"].items():
        eng.nodes[name].qstats = q
    for store in ("firestore", "bigquery"):
        mine = getattr(eng.stores, store)
        for name, tot in snap[store].items():
            row = mine.setdefault(name, {k: 0 for k in tot})
            for k, v in tot.items():
                row[k] += v
    eng._backlog_gauges()


def _upstream(exp, seed, exact, part: Part, cut: Cut, conn, guard: dict | None = None) -> None:
    try:
        pending: list = []

        def send(k: int, items: list) -> None:
            # Attribute sets are interned per engine: send the sets, not the ids.
            pending.append((k, [(topic, (b.t, b.pub, b.attrs, b.key, b.attempt),
                                 {a: eng_attrs.get(a) for a in np.unique(b.attrs).tolist()}) for topic, b in items]))
            if len(pending) >= CHUNK_STEPS:
                conn.send(("steps", pending[:]))
                pending.clear()

        part.send = send
        eng = Engine(exp, seed=seed, exact=exact, part=part, guard=guard)
        eng_attrs = eng.attrs
        eng.run()
        if pending:
            conn.send(("steps", pending))
        conn.send(("done", _snapshot(eng, cut)))
    except Stalled as exc:  # bad input, not a bug: the parent raises it as such
        conn.send(("stalled", str(exc)))
    except BaseException:  # noqa: BLE001 -- the parent re-raises it with the child's traceback
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class SplitFailed(RuntimeError):
    pass


def run_split(exp, cut: Cut, *, seed: int | None = None, exact: bool = False,
              progress: Callable[[int, int], None] | None = None, guard: dict | None = None) -> Engine:
    """Run exp in two processes cut at `cut`; returns the downstream Engine holding the
    merged results."""
    up, down = _parts(exp, cut)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    recv_end, send_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_upstream, args=(exp, seed, exact, up, cut, send_end, guard), daemon=True,
                       name="surgesim-sim-upstream")
    proc.start()
    send_end.close()
    steps: deque = deque()
    result: dict[str, Any] = {}

    def pump() -> None:
        try:
            kind, payload = recv_end.recv()
        except EOFError:
            raise SplitFailed(f"the upstream simulator process died (exit code {proc.exitcode})") from None
        if kind == "error":
            raise SplitFailed(f"the upstream simulator process failed:\n{payload}")
        if kind == "stalled":
            raise Stalled(payload)
        if kind == "steps":
            steps.extend(payload)
        else:
            result["snap"] = payload

    def receive(k: int) -> list:
        while not steps:
            pump()
        got, items = steps.popleft()
        assert got == k, (got, k)  # both engines step the same clock
        out = []
        for topic, arrays, sets in items:
            b = Batch(*arrays)
            ids = {a: eng.attrs.intern(attrs) for a, attrs in sets.items()}
            if any(a != i for a, i in ids.items()):
                b.attrs = np.vectorize(ids.__getitem__, otypes=[b.attrs.dtype])(b.attrs)
            out.append((topic, b))
        return out

    down.receive = receive
    eng = Engine(exp, seed=seed, exact=exact, part=down, guard=guard)
    try:
        eng.run(progress)
        while "snap" not in result:
            pump()
        _adopt(eng, result["snap"])
    finally:
        recv_end.close()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return eng


def run_experiment(exp, *, seed: int | None = None, exact: bool = False, split: bool = True,
                   progress: Callable[[int, int], None] | None = None, guard: dict | None = None) -> Engine:
    """Run exp: in two processes when `split` and the system can be cut at the fleet's
    telemetry, else in one. The returned Engine's `cut` says which."""
    cut = find_cut(exp) if split else None
    if cut is None:
        eng = Engine(exp, seed=seed, exact=exact, guard=guard).run(progress)
    else:
        eng = run_split(exp, cut, seed=seed, exact=exact, progress=progress, guard=guard)
    eng.cut = cut
    return eng
