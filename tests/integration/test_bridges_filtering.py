"""Filter enforcement for a pull subscription consumed directly by a user's process."""

from __future__ import annotations

import base64

import pytest

from surgesim.emulators.filtering import FilterRelay
from surgesim.emulators.pubsub_rest import PubSubRest, b64
from tests.integration.bridges_support import LoopThread, fresh, wait_until

pytestmark = pytest.mark.integration


def test_relay_delivers_matching_and_not_non_matching_to_a_plain_pull_consumer(gcp):
    lt = LoopThread()
    rest = lt.run(_rest(gcp))
    topic, sub = fresh("t-relay"), fresh("s-relay")
    relay = FilterRelay(rest, sub, topic, 'attributes.kind = "keep"', ack_deadline=10)
    try:
        lt.run(relay.provision())
        fut = lt.spawn(relay.run())
        # the producer publishes to the real topic, as it would in the cloud
        lt.run(rest.publish(topic, [
            {"data": b64("a"), "attributes": {"kind": "keep", "n": "1"}},
            {"data": b64("b"), "attributes": {"kind": "drop"}},
            {"data": b64("c"), "attributes": {"kind": "keep", "n": "3"}, "orderingKey": "k"},
            {"data": b64("d")},
        ]))
        got: list[dict] = []

        def pulled():
            # the user's consumer: a plain pull on its own subscription name
            msgs = lt.run(rest.pull(sub, 100))
            if msgs:
                lt.run(rest.ack(sub, [m["ackId"] for m in msgs]))
            got.extend(m["message"] for m in msgs)
            return relay.counters.seen == 4 and len(got) >= 2

        assert wait_until(pulled, timeout=20)
        assert lt.run(rest.pull(sub, 100)) == []
        lt.loop.call_soon_threadsafe(relay.stop)
        fut.result(10)
        assert sorted(base64.b64decode(m["data"]).decode() for m in got) == ["a", "c"]
        by_data = {base64.b64decode(m["data"]).decode(): m for m in got}
        assert by_data["a"]["attributes"] == {"kind": "keep", "n": "1"}
        assert by_data["c"].get("orderingKey") == "k"
        assert relay.counters.filtered == 2 and relay.counters.relayed == 2
        assert lt.run(rest.get_subscription(relay.tap)) is None  # the tap is cleaned up
    finally:
        lt.run(rest.aclose())
        lt.close()


async def _rest(gcp):
    return PubSubRest(gcp.endpoint("pubsub"), gcp.project)
