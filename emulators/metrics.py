"""Subscription metrics the emulator does not report, measured by the harness.

Per subscription, every second: backlog (``num_undelivered_messages``), oldest unacked
age, and counts of acked, dead-lettered and filtered messages; per topic the published
count. Rows are ``surgesim.rundir`` timeseries rows (time_s, metric, entity, value) with
the Cloud Monitoring names of ``rundir.METRICS``.

Where the numbers come from (nothing is reported by the services themselves):

* **published** -- an unfiltered *tap* subscription per topic owned by the harness
  (fresh name per run), drained with batched sync pull + ack. Each tapped message is
  matched against every subscription's filter, so a subscription's expected total is
  known even when the emulator ignores its filter; non-matching ones count as filtered.
* **acked** -- reported to :meth:`MetricsSampler.settled` by whoever acknowledged:
  the push bridge, the BigQuery bridge, or a consumer run inside the harness.
* **dead-lettered** -- the taps of dead-letter topics: the emulator stamps each dead
  letter with ``CloudPubSubDeadLetterSourceSubscription`` (and the original publish
  time, by which the message is matched back to its source's outstanding set).

backlog = matching published - acked - dead-lettered; the DLQ depth is simply the backlog
of the DLQ's holding subscription. A pull subscription consumed by a user's own process
has no acknowledger that reports here (see docs/bridges.md): it is reported only once
something calls ``settled`` for it (``observed``), never as a made-up number.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from surgesim.pubsub_filter import parse_filter
from surgesim.rundir import METRICS

from .pubsub_grpc import PubSubGrpc, as_rest
from .pubsub_rest import PubSubRest, PubSubRestError

log = logging.getLogger(__name__)

DEAD_LETTER_SOURCE = "CloudPubSubDeadLetterSourceSubscription"
DEAD_LETTER_PUBLISH_TIME = "CloudPubSubDeadLetterSourceTopicPublishTime"


def rfc3339_epoch(text: str) -> float:
    """Epoch seconds of an RFC 3339 time as Google's APIs write it (a Pub/Sub publishTime,
    a CloudEvent's ce-time: `Z`, up to nanoseconds)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _key(publish_time: str, data: str, attributes: dict | None) -> tuple:
    attrs = tuple(sorted((k, v) for k, v in (attributes or {}).items() if not k.startswith("CloudPubSubDeadLetter")))
    return (publish_time, data, attrs)


@dataclass
class Ledger:
    """What one subscription should have, and what happened to it."""

    name: str
    topic: str
    filter: str | None = None
    observed: bool = False
    matched: int = 0
    acked: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    outstanding: "OrderedDict[str, float]" = field(default_factory=OrderedDict)
    by_key: dict = field(default_factory=dict)
    early: set = field(default_factory=set)
    """Settled before the tap saw the message (the tap can lag the acknowledger)."""
    on_settle: list = field(default_factory=list, repr=False)
    """Called with (subscription, publish epoch) for each acked message the tap had seen
    (the live harness's publish -> ack lag)."""

    def __post_init__(self) -> None:
        self.predicate = parse_filter(self.filter or "")

    @property
    def backlog(self) -> int:
        return self.matched - self.acked - self.dead_lettered

    def oldest_age(self, now: float) -> float:
        for mid, published in self.outstanding.items():
            return max(0.0, now - published)
        return 0.0

    def settle(self, mid: str) -> None:
        published = self.outstanding.pop(mid, None)
        if published is None:
            self.early.add(mid)
            return
        self.acked += 1
        for hook in self.on_settle:
            hook(self.name, published)

    def see(self, mid: str, published: float, key: tuple) -> None:
        self.matched += 1
        if mid in self.early:
            self.early.discard(mid)
            self.acked += 1
            return
        self.outstanding[mid] = published
        self.by_key[key] = mid

    def dead_letter(self, key: tuple) -> None:
        mid = self.by_key.pop(key, None)
        if mid is not None and self.outstanding.pop(mid, None) is not None:
            self.dead_lettered += 1


class MetricsSampler:
    def __init__(self, rest: PubSubRest, subscriptions: list[tuple[str, str, str | None]], *,
                 interval: float = 1.0, observed: set[str] | None = None, start: float | None = None) -> None:
        """``subscriptions``: (name, topic, filter) for every subscription of the system."""
        self.rest = rest
        self.interval = interval
        self.ledgers = {name: Ledger(name, topic, flt, observed=name in (observed or set()))
                        for name, topic, flt in subscriptions}
        self.topics = sorted({t for _, t, _ in subscriptions})
        self.by_topic: dict[str, list[Ledger]] = {t: [l for l in self.ledgers.values() if l.topic == t] for t in self.topics}
        self.published: dict[str, int] = {t: 0 for t in self.topics}
        self.taps = {t: f"surgesim-tap-{uuid.uuid4().hex[:8]}-{t}"[:255] for t in self.topics}
        self.rows: list[dict] = []
        self.start = time.monotonic() if start is None else start
        self._last: dict[tuple[str, str], int] = {}
        self._window_start = 0.0
        self._stop = asyncio.Event()
        self._grpc: PubSubGrpc | None = None

    async def provision(self) -> None:
        for topic, tap in self.taps.items():
            await self.rest.ensure_topic(topic)
            await self.rest.create_subscription(tap, topic, ack_deadline=60)

    def settled(self, subscription: str, message_id: str, outcome: str = "acked") -> None:
        """An acknowledger's report. ``filtered`` outcomes are ignored: the tap counts those."""
        ledger = self.ledgers.get(subscription)
        if ledger is None or outcome != "acked":
            return
        ledger.observed = True
        ledger.settle(message_id)

    def observe(self, subscription: str) -> None:
        if subscription in self.ledgers:
            self.ledgers[subscription].observed = True

    def stop(self) -> None:
        self._stop.set()

    async def drain(self) -> int:
        """Pull every tap until empty; returns messages seen. Over gRPC while `run` is
        running (the emulator's REST adapter costs it several times the CPU: measured as
        measurement overhead in docs/benchmarks/bridges.md), else over REST."""
        seen = 0
        for topic, tap in self.taps.items():
            while True:
                if self._grpc is not None:
                    pulled = await self._grpc.pull(tap, 1000)
                    got = [as_rest(r) for r in pulled]
                else:
                    got = await self.rest.pull(tap, 1000)
                if not got:
                    break
                seen += len(got)
                self._account(topic, got)
                ids = [r["ackId"] for r in got]
                await (self._grpc.ack(tap, ids) if self._grpc is not None else self.rest.ack(tap, ids))
        return seen

    def _account(self, topic: str, got: list[dict]) -> None:
        self.published[topic] += len(got)
        ledgers = self.by_topic[topic]
        for r in got:
            m = r["message"]
            attrs = m.get("attributes") or {}
            source = attrs.get(DEAD_LETTER_SOURCE)
            if source and source in self.ledgers:
                self.ledgers[source].dead_letter(_key(attrs.get(DEAD_LETTER_PUBLISH_TIME, ""), m.get("data", ""), attrs))
            published = rfc3339_epoch(m["publishTime"])
            key = _key(m["publishTime"], m.get("data", ""), attrs)
            for ledger in ledgers:
                if ledger.predicate(attrs):
                    ledger.see(m["messageId"], published, key)
                else:
                    ledger.filtered += 1

    def sample(self, now_wall: float | None = None, now_mono: float | None = None) -> list[dict]:
        now_wall = time.time() if now_wall is None else now_wall
        now_t = round((time.monotonic() if now_mono is None else now_mono) - self.start, 3)
        # rundir convention: time_s is the window's start; gauges are the level at its end.
        t, self._window_start = self._window_start, now_t
        rows = []
        for topic, n in self.published.items():
            rows.append(self._count(t, "published", topic, n))
        for name, l in self.ledgers.items():
            rows += [self._count(t, "filtered", name, l.filtered), self._count(t, "dead_lettered", name, l.dead_lettered)]
            if l.observed:
                rows += [
                    self._count(t, "acked", name, l.acked),
                    {"time_s": t, "metric": METRICS["backlog"], "entity": name, "value": float(l.backlog)},
                    {"time_s": t, "metric": METRICS["oldest_unacked"], "entity": name, "value": l.oldest_age(now_wall)},
                ]
        self.rows += rows
        return rows

    def _count(self, t: float, key: str, entity: str, total: int) -> dict:
        # Counters become counts within the window, as rundir's non-gauge metrics are.
        last = self._last.get((key, entity), 0)
        self._last[(key, entity)] = total
        return {"time_s": t, "metric": METRICS[key], "entity": entity, "value": float(total - last)}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.interval
        self._grpc = PubSubGrpc(self.rest.endpoint, self.rest.project)  # bound to this loop
        try:
            while not self._stop.is_set():
                try:
                    await self.drain()
                except (httpx.HTTPError, PubSubRestError) as exc:
                    log.warning("metrics tap: %s", exc)
                if loop.time() >= next_at:
                    self.sample()
                    next_at += self.interval
                try:
                    await asyncio.wait_for(self._stop.wait(), min(0.05, max(0.0, next_at - loop.time())))
                except asyncio.TimeoutError:
                    pass
        finally:
            grpc_client, self._grpc = self._grpc, None
            await grpc_client.aclose()
            for tap in self.taps.values():
                try:
                    await self.rest.delete_subscription(tap)
                except (httpx.HTTPError, PubSubRestError):
                    pass

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["time_s", "metric", "entity", "value"])

    def totals(self) -> dict:
        return {name: {"published": l.matched + l.filtered, "acked": l.acked, "dead_lettered": l.dead_lettered,
                       "filtered": l.filtered, "backlog": l.backlog if l.observed else None}
                for name, l in self.ledgers.items()}
