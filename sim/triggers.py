"""Eventarc triggers in the simulator, kind by kind, costed as the live harness delivers them.

* **Pub/Sub** (`topic:`): Eventarc creates a push subscription on the topic; so does the
  live harness (emulators/push.py with the messagePublished body). The simulator does the
  same: each Pub/Sub trigger becomes a push subscription named like the live one
  (`Trigger.subscription`), with the trigger's retry and dead-letter policy, and so gets
  the push model's delivery, backoff, dead-lettering and backlog metrics.
* **Firestore** (`collection:`/`document:`) and **Cloud Storage** (`bucket:`): each write
  (a `firestore` write step on the collection, a `storage` step on the bucket) is one
  event, delivered after a delivery latency (`delivery_latency`, default below) drawn per
  event, so events are not ordered (Eventarc does not order them either); a failed
  delivery comes back after the trigger's retry backoff (10 s doubling to 600 s, as
  Eventarc's; sim/service.py).

The default delivery latencies are assumptions, not measurements (Google publishes no
figure): a Firestore change p50 300 ms / p99 1.5 s, a Cloud Storage object p50 1 s / p99
5 s. Set `delivery_latency` on the trigger to what you measured in your project.
"""

from __future__ import annotations

from surgesim.schema import Latency, System
from surgesim.schema.system import Subscription, Trigger

DEFAULT_DELIVERY_LATENCY = {
    "firestore": Latency(p50=0.3, p99=1.5),
    "storage": Latency(p50=1.0, p99=5.0),
}


def delivery_latency(trig: Trigger) -> Latency | None:
    """Change to delivery for a Firestore or Storage trigger (None for Pub/Sub: its push
    subscription carries the cost)."""
    if trig.kind == "pubsub":
        return None
    return trig.delivery_latency or DEFAULT_DELIVERY_LATENCY[trig.kind]


def push_subscription(trig: Trigger) -> Subscription:
    """The push subscription a Pub/Sub trigger stands for, as Eventarc creates it."""
    return Subscription(name=trig.subscription, topic=trig.topic, consumer=trig.target, delivery="push",
                        push_path=trig.path, retry=trig.retry, dead_letter=trig.dead_letter)


def with_trigger_subscriptions(system: System) -> System:
    """The system with each Pub/Sub trigger's push subscription added."""
    extra = [push_subscription(t) for t in system.triggers if t.kind == "pubsub"]
    if not extra:
        return system
    return system.model_copy(update={"subscriptions": [*system.subscriptions, *extra]})
