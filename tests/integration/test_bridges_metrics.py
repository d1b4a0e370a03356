"""Backlog, oldest-unacked and dead-letter metrics measured by the harness on the real emulator."""

from __future__ import annotations


import pytest

from surgesim.emulators import service_http
from surgesim.emulators.metrics import MetricsSampler
from surgesim.emulators.pubsub_rest import PubSubRest, b64
from surgesim.emulators.push import PushBridge, PushTarget
from surgesim.rundir import METRICS
from tests.integration.bridges_support import LoopThread, Recorder, fresh, wait_until

pytestmark = pytest.mark.integration


async def _setup(gcp, topic, dlq, sub, hold, url):
    rest = PubSubRest(gcp.endpoint("pubsub"), gcp.project)
    for t in (topic, dlq):
        await rest.ensure_topic(t)
    await rest.create_subscription(hold, dlq)
    sampler = MetricsSampler(rest, [(sub, topic, 'attributes.keep = "1"'), (hold, dlq, None)],
                             interval=0.2, observed={sub, hold})
    await sampler.provision()
    http = service_http.session(30.0)
    bridge = PushBridge(rest, PushTarget(sub, topic, url, dead_letter_topic=dlq, max_attempts=5),
                        http, on_settled=sampler.settled)
    await bridge.provision()
    return rest, sampler, bridge, http


def test_backlog_rises_while_consumer_fails_and_falls_when_it_recovers(gcp):
    gate = {"open": False}
    server = Recorder(lambda body: 204 if gate["open"] and body["message"].get("attributes", {}).get("poison") != "1" else 503)
    topic, dlq, sub, hold = fresh("t-m"), fresh("t-mdlq"), fresh("s-m"), fresh("s-mhold")
    lt = LoopThread()
    rest, sampler, bridge, http = lt.run(_setup(gcp, topic, dlq, sub, hold, server.url))
    futs = [lt.spawn(sampler.run()), lt.spawn(bridge.run())]
    try:
        lt.run(rest.publish(topic, [{"data": b64(str(i)), "attributes": {"keep": "1"}} for i in range(20)]
                            + [{"data": b64("x"), "attributes": {"keep": "0"}} for _ in range(5)]))

        def last(key, entity):
            rows = [r for r in sampler.rows if r["metric"] == METRICS[key] and r["entity"] == entity]
            return rows[-1]["value"] if rows else None

        assert wait_until(lambda: last("backlog", sub) == 20, timeout=15)
        assert wait_until(lambda: (last("oldest_unacked", sub) or 0) >= 0.5, timeout=15)
        gate["open"] = True
        lt.run(rest.publish(topic, [{"data": b64("p"), "attributes": {"keep": "1", "poison": "1"}}]))
        # all 20 acked; the poison one dead-lettered after 5 attempts; the DLQ holds it
        assert wait_until(lambda: last("backlog", sub) == 0 and last("backlog", hold) == 1, timeout=40)
        totals = sampler.totals()
        assert totals[sub] == {"published": 26, "acked": 20, "dead_lettered": 1, "filtered": 5, "backlog": 0}
        assert last("oldest_unacked", sub) == 0.0
        # published counts per topic are counts per window: they sum to the total
        assert sum(r["value"] for r in sampler.rows if r["metric"] == METRICS["published"] and r["entity"] == topic) == 26
    finally:
        for obj in (bridge, sampler):
            lt.loop.call_soon_threadsafe(obj.stop)
        for f in futs:
            f.result(10)
        lt.run(http.close())
        lt.run(rest.aclose())
        lt.close()
        server.close()
