"""The three Eventarc trigger kinds in the simulator: a Pub/Sub trigger is the push
subscription Eventarc creates (same name as live), Firestore and Storage events arrive
after a per-event delivery latency (so not in order) and are retried with the trigger's
backoff."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from surgesim.schema import System, load_experiment
from surgesim.sim.engine import Engine
from surgesim.sim.triggers import delivery_latency, with_trigger_subscriptions

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def test_a_pubsub_trigger_is_its_push_subscription():
    system = System.model_validate({
        "name": "x", "topics": [{"name": "orders"}, {"name": "orders.dlq"}],
        "subscriptions": [{"name": "hold", "topic": "orders.dlq"}],
        "services": [{"name": "fn"}],
        "triggers": [{"name": "on-order", "topic": "orders", "target": "fn", "path": "/events",
                      "dead_letter": {"topic": "orders.dlq", "max_attempts": 7}}]})
    sub = with_trigger_subscriptions(system).subscription("eventarc-on-order-sub")
    assert (sub.topic, sub.consumer, sub.delivery, sub.push_path) == ("orders", "fn", "push", "/events")
    assert sub.retry.min_backoff == 10 and sub.retry.max_backoff == 600 and sub.dead_letter.max_attempts == 7
    assert delivery_latency(system.triggers[0]) is None


def test_dogfinder_photo_uploads_fire_the_storage_trigger_once_each_late_and_unordered():
    exp = load_experiment(SCENARIOS / "dogfinder_viral.yaml")
    exp = replace(exp, scenario=exp.scenario.model_copy(update={"duration": 1800.0}))
    eng = Engine(exp).run()
    services = eng.totals()["services"]
    posted = eng.metrics.totals["latency/app.post_sighting"].count
    assert posted > 100
    # one finalized event per uploaded photo; the last few are still on their way at the end
    assert posted - 30 < services["photos"]["requests"] <= posted
    assert services["photos"]["errors"] == 0
    t = eng.trigger_totals()["photo-uploaded"]
    assert t["changes"] == posted and t["given_up"] == 0
    assert t["changes"] == t["delivered"] + t["pending"]  # the ones still on their way are pending, not lost


def test_trigger_events_get_the_delivery_latency_and_lose_their_order():
    exp = load_experiment(SCENARIOS / "dogfinder_viral.yaml")
    eng = Engine(replace(exp, scenario=exp.scenario.model_copy(update={"duration": 60.0})))
    trig = eng.triggers["photo-uploaded"]
    seen = []
    node = eng.nodes["photos"]
    node.enqueue = lambda ch, b: seen.append(b.t.copy())  # what the trigger hands to the service
    times = np.arange(0.0, 100.0, 0.1)
    eng.trigger_event(trig, times, np.zeros(times.size, dtype=np.int64), None)
    delays = seen[0] - times
    assert 0.5 < np.median(delays) < 2.0 and np.percentile(delays, 99) < 10.0  # p50 1 s / p99 5 s
    assert (np.diff(seen[0]) < 0).any()  # later writes delivered before earlier ones


def test_delivery_latencies_are_independent_across_many_small_batches():
    """A step hands the trigger a few changes at a time: each change still gets its own draw
    from the delivery latency (p50 1 s / p99 5 s for Storage), not the same first few."""
    exp = load_experiment(SCENARIOS / "dogfinder_viral.yaml")
    eng = Engine(replace(exp, scenario=exp.scenario.model_copy(update={"duration": 60.0})))
    trig = eng.triggers["photo-uploaded"]
    seen = []
    node = eng.nodes["photos"]
    node.enqueue = lambda ch, b: seen.append(b.t - b.pub)
    for k in range(1000):
        times = np.full(3, float(k))
        eng.trigger_event(trig, times, np.zeros(3, dtype=np.int64), None)
    delays = np.concatenate(seen)
    assert np.unique(delays).size == delays.size == 3000
    assert 0.85 < np.median(delays) < 1.15 and 3.8 < np.percentile(delays, 99) < 6.5
