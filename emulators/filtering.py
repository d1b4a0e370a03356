"""Subscription filters where the emulator accepts them but does not apply them.

Two cases, chosen per subscription from the fidelity probe (emulators.probe):

* **push** subscriptions: the push bridge (emulators.push) acks non-matching messages
  unseen and counts them as filtered -- exactly what Pub/Sub does.
* **pull** subscriptions consumed directly by a user's process: :class:`FilterRelay`
  provisions the user's subscription, under its own name and settings, on an internal
  per-subscription topic (``surgesim.filtered.<sub>``); the relay pulls an unfiltered
  harness-owned *tap* subscription on the real topic and republishes only the matching
  messages (data, attributes and ordering key unchanged). The user's code is unchanged:
  same subscription name, same client, same ack/nack/dead-letter behaviour. The price
  (see docs/bridges.md): the message id and publish time the consumer sees are the
  republished ones, and each message costs one extra pull + publish on the emulator.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Mapping

import httpx

from surgesim.pubsub_filter import parse_filter

from .pubsub_grpc import Poller, PubSubGrpc, as_rest
from .pubsub_rest import PubSubRest, PubSubRestError

log = logging.getLogger(__name__)

INTERNAL_PREFIX = "surgesim.filtered."


def emulator_applies_filters(fidelity) -> bool:
    """True only when the probe measured that the emulator applies filters itself.
    Unknown (no probe) counts as not applied: enforcing twice is harmless, never is not."""
    return bool(fidelity is not None and getattr(fidelity, "filter_applied", None) is True)


def should_deliver(filter_text: str | None, attributes: Mapping[str, str] | None) -> bool:
    """Pub/Sub's decision for one message: no filter delivers everything."""
    if not filter_text:
        return True
    return parse_filter(filter_text)(attributes or {})


def internal_topic(subscription: str) -> str:
    return f"{INTERNAL_PREFIX}{subscription}"


@dataclass
class RelayCounters:
    seen: int = 0
    relayed: int = 0
    filtered: int = 0
    errors: int = 0


class FilterRelay:
    """Feeds one filtered pull subscription through an internal topic."""

    def __init__(self, rest: PubSubRest, subscription: str, topic: str, filter_text: str, *,
                 ack_deadline: float = 10.0, dead_letter: tuple[str, int] | None = None) -> None:
        self.rest = rest
        self.subscription = subscription
        self.topic = topic
        self.filter = filter_text
        self.ack_deadline = ack_deadline
        self.dead_letter = dead_letter
        self.internal = internal_topic(subscription)
        self.tap = f"surgesim-relay-{subscription}-{uuid.uuid4().hex[:8]}"[:255]
        self.counters = RelayCounters()
        self._predicate = parse_filter(filter_text)
        self._stop = asyncio.Event()

    async def provision(self) -> None:
        await self.rest.ensure_topic(self.topic)
        await self.rest.ensure_topic(self.internal)
        # The tap first, so nothing published from now on is missed by the user's subscription.
        await self.rest.create_subscription(self.tap, self.topic, ack_deadline=60)
        await self.rest.create_subscription(self.subscription, self.internal, ack_deadline=self.ack_deadline,
                                            dead_letter=self.dead_letter, filter=self.filter)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        grpc_client = PubSubGrpc(self.rest.endpoint, self.rest.project)  # bound to this loop
        poller = Poller(grpc_client, self.tap, self._stop, on_error=self._count_error)
        try:
            while not self._stop.is_set():
                got = [as_rest(r) for r in await poller.pull(1000)]
                if not got:
                    continue
                out = []
                for r in got:
                    m = r["message"]
                    self.counters.seen += 1
                    if self._predicate(m.get("attributes") or {}):
                        msg = {"data": m.get("data", "")}
                        if m.get("attributes"):
                            msg["attributes"] = m["attributes"]
                        if m.get("orderingKey"):
                            msg["orderingKey"] = m["orderingKey"]
                        out.append(msg)
                    else:
                        self.counters.filtered += 1
                try:
                    for i in range(0, len(out), 1000):
                        await self.rest.publish(self.internal, out[i:i + 1000])
                    self.counters.relayed += len(out)
                    # Ack the tap only after the republish: at-least-once, like Pub/Sub.
                    await grpc_client.ack(self.tap, [r["ackId"] for r in got])
                except (httpx.HTTPError, PubSubRestError) as exc:
                    self._count_error()
                    log.warning("relay publish %s: %s", self.internal, exc)
        finally:
            await grpc_client.aclose()
            try:
                await self.rest.delete_subscription(self.tap)
            except (httpx.HTTPError, PubSubRestError):
                pass

    def _count_error(self) -> None:
        self.counters.errors += 1
