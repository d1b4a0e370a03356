"""The push bridge against the real Pub/Sub emulator and real HTTP servers."""

from __future__ import annotations

import base64
import contextlib

import pytest

from surgesim.emulators import service_http
from surgesim.emulators.identity import Issuer
from surgesim.emulators.pubsub_rest import PubSubRest, b64
from surgesim.emulators.push import PushBridge, PushTarget
from tests.integration.bridges_support import LoopThread, Recorder, fresh, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def rest(gcp, loop):
    client = loop.run(_make_rest(gcp.endpoint("pubsub"), gcp.project))
    yield client
    loop.run(client.aclose())


async def _make_rest(endpoint, project):
    return PubSubRest(endpoint, project)


@contextlib.contextmanager
def running_bridge(loop, rest, target: PushTarget, issuer=None):
    async def start():
        http = service_http.session(30.0)
        bridge = PushBridge(rest, target, http, issuer=issuer)
        await rest.ensure_topic(target.topic)
        if target.dead_letter_topic:
            await rest.ensure_topic(target.dead_letter_topic)
        await bridge.provision()
        return bridge, http

    bridge, http = loop.run(start())
    fut = loop.spawn(bridge.run())
    try:
        yield bridge
    finally:
        loop.loop.call_soon_threadsafe(bridge.stop)
        fut.result(10)
        loop.run(http.close())


def publish(loop, rest, topic, *messages):
    return loop.run(rest.publish(topic, list(messages)))


def test_envelope_fields_and_token_and_ack(loop, rest):
    server = Recorder()
    topic, sub = fresh("t-env"), fresh("s-env")
    target = PushTarget(sub, topic, server.url + "/pubsub", service_account="relay@p-local.iam.gserviceaccount.com",
                        ack_deadline=10)
    issuer = Issuer()
    try:
        with running_bridge(loop, rest, target, issuer) as bridge:
            (mid,) = publish(loop, rest, topic, {"data": b64(b'{"x": 1}'), "attributes": {"eventType": "ParcelCreated"}})
            assert wait_until(lambda: len(server.requests) == 1)
            assert wait_until(lambda: bridge.counters.acked == 1)
            # acked on 204: never delivered again (the lease would have expired by the 10 s deadline
            # only if the ack were lost, so check the emulator has nothing left to give)
            assert loop.run(rest.pull(sub, 10)) == []
        path, headers, body = server.requests[0]
        assert path == "/pubsub"
        # an ID token as Pub/Sub signs one: for the push account, audience the push endpoint
        claims = issuer.verify(headers["authorization"].removeprefix("Bearer "), [server.url])
        assert claims["email"] == "relay@p-local.iam.gserviceaccount.com" and claims["email_verified"] is True
        assert claims["aud"] == server.url + "/pubsub" and claims["iss"] == "https://accounts.google.com"
        assert headers["content-type"] == "application/json"
        # as in Pub/Sub, deliveryAttempt is present only with a dead-letter policy
        assert set(body) == {"message", "subscription"}
        assert body["subscription"] == f"projects/{rest.project}/subscriptions/{sub}"
        m = body["message"]
        assert set(m) == {"data", "attributes", "messageId", "message_id", "publishTime", "publish_time"}
        assert base64.b64decode(m["data"]) == b'{"x": 1}'
        assert m["attributes"] == {"eventType": "ParcelCreated"}
        assert m["messageId"] == m["message_id"] == mid
        assert m["publishTime"] == m["publish_time"] and m["publishTime"].endswith("Z")
    finally:
        server.close()


def test_redelivery_on_5xx_with_backoff(loop, rest):
    attempts: list[int] = []

    def respond(body):
        attempts.append(body["deliveryAttempt"])
        return 503 if len(attempts) < 3 else 200

    server = Recorder(respond)
    topic, sub, dlq = fresh("t-retry"), fresh("s-retry"), fresh("t-retry-dlq")
    target = PushTarget(sub, topic, server.url, min_backoff=1.0, max_backoff=2.0, ack_deadline=10,
                        dead_letter_topic=dlq, max_attempts=5)
    try:
        with running_bridge(loop, rest, target) as bridge:
            publish(loop, rest, topic, {"data": b64("retry me")})
            assert wait_until(lambda: bridge.counters.acked == 1, timeout=20)
        assert attempts == [1, 2, 3]
        assert bridge.counters.nacked == 2
        # the retry backoff spaces the attempts: >= 1 s, then >= 2 s (1 s * 2, capped at 2 s)
        times = server.times
        assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 1.9
    finally:
        server.close()


def test_poison_message_dead_lettered_after_exactly_max_attempts(loop, rest):
    server = Recorder(lambda body: 500)
    topic, sub, dlq, hold = fresh("t-poison"), fresh("s-poison"), fresh("t-dlq"), fresh("s-hold")
    target = PushTarget(sub, topic, server.url, dead_letter_topic=dlq, max_attempts=5, ack_deadline=10)
    try:
        loop.run(rest.ensure_topic(dlq))
        loop.run(rest.create_subscription(hold, dlq))
        with running_bridge(loop, rest, target):
            (mid,) = publish(loop, rest, topic, {"data": b64("poison"), "attributes": {"k": "v"}})
            dead: list[dict] = []

            def landed():
                dead.extend(loop.run(rest.pull(hold, 10)))
                return bool(dead)

            assert wait_until(landed, timeout=30, step=0.2)
        assert [b["deliveryAttempt"] for b in server.bodies()] == [1, 2, 3, 4, 5]
        assert len(dead) == 1
        attrs = dead[0]["message"]["attributes"]
        assert base64.b64decode(dead[0]["message"]["data"]) == b"poison"
        assert attrs["k"] == "v"
        assert attrs["CloudPubSubDeadLetterSourceSubscription"] == sub
        assert attrs["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
        assert mid
    finally:
        server.close()


def test_filter_enforced_non_matching_acked_unseen(loop, rest, gcp):
    server = Recorder()
    topic, sub = fresh("t-filter"), fresh("s-filter")
    flt = 'attributes.eventType = "ParcelDelivered" OR hasPrefix(attributes.eventType, "Geo")'
    target = PushTarget(sub, topic, server.url, filter=flt, enforce_filter=True)
    try:
        with running_bridge(loop, rest, target) as bridge:
            publish(loop, rest, topic,
                    {"data": b64("1"), "attributes": {"eventType": "ParcelDelivered"}},
                    {"data": b64("2"), "attributes": {"eventType": "ParcelCreated"}},
                    {"data": b64("3"), "attributes": {"eventType": "GeofenceCrossed"}},
                    {"data": b64("4")})
            assert wait_until(lambda: bridge.counters.acked == 2)
            emulator_filters = bool(gcp.fidelity and gcp.fidelity.filter_applied)
            if not emulator_filters:
                assert wait_until(lambda: bridge.counters.filtered == 2)
            assert loop.run(rest.pull(sub, 10)) == []  # nothing left: filtered ones were acked
        got = sorted(base64.b64decode(b["message"]["data"]).decode() for b in server.bodies())
        assert got == ["1", "3"]
    finally:
        server.close()


def test_push_window_exceeds_emulator_limit_of_two(loop, rest):
    server = Recorder(delay=0.2)
    topic, sub = fresh("t-window"), fresh("s-window")
    target = PushTarget(sub, topic, server.url, max_window=16)
    try:
        with running_bridge(loop, rest, target) as bridge:
            publish(loop, rest, topic, *({"data": b64(str(i))} for i in range(120)))
            assert wait_until(lambda: bridge.counters.acked == 120, timeout=30)
        # slow-start opened the window beyond the emulator's own 2 in flight, up to the cap
        assert 2 < server.peak_inflight <= 16
        assert bridge.counters.window == 16
    finally:
        server.close()
