"""How bridges drain a subscription (emulators.pubsub_grpc.Poller), on the real emulator:
immediate pulls with an idle backoff, a publish seen within the backoff, and nothing left
behind in the emulator when a bridge stops: the next consumer of the subscription gets the
next message at once (a long poll given up at stop would hide it for an ack deadline)."""

from __future__ import annotations

import asyncio
import time

import pytest

from surgesim.emulators.pubsub_grpc import Poller, PubSubGrpc
from surgesim.emulators.pubsub_rest import PubSubRest, b64
from tests.integration.bridges_support import LoopThread, fresh

pytestmark = pytest.mark.integration


async def subscribed(gcp, topic: str, sub: str) -> tuple[PubSubRest, PubSubGrpc]:
    """A fresh topic and pull subscription; REST for publishing, gRPC for the poller."""
    rest = PubSubRest(gcp.endpoint("pubsub"), gcp.project)
    await rest.ensure_topic(topic)
    await rest.create_subscription(sub, topic, ack_deadline=60)
    return rest, PubSubGrpc(gcp.endpoint("pubsub"), gcp.project)


def test_an_idle_poller_backs_off_sees_a_publish_and_leaves_nothing_behind_when_stopped(gcp):
    topic, sub = fresh("poll-topic"), fresh("poll-sub")

    async def scenario() -> dict:
        rest, client = await subscribed(gcp, topic, sub)
        calls = []
        pull = client.pull

        async def counted(*a, **kw):
            calls.append(time.monotonic())
            return await pull(*a, **kw)

        client.pull = counted
        stop = asyncio.Event()
        poller = Poller(client, sub, stop, idle_max=0.1)
        out = {}
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:
            assert await poller.pull(100) == []
        out["idle_pulls_in_2_s"] = len(calls)
        await rest.publish(topic, [{"data": b64("ping")}])
        t0 = time.monotonic()
        got = []
        while not got:
            got = await poller.pull(100)
        out["seen_after_s"] = time.monotonic() - t0
        out["got"] = [r.message.data for r in got]
        await client.ack(sub, [r.ack_id for r in got])
        # stop while idle, then the next message is at once there for whoever pulls next
        idle = asyncio.create_task(poller.pull(100))
        await asyncio.sleep(0.05)
        stop.set()
        out["after_stop"] = await asyncio.wait_for(idle, 2)
        await rest.publish(topic, [{"data": b64("next")}])
        out["next_visible"] = [m["message"]["data"] for m in await rest.pull(sub, 10)]
        await client.aclose()
        await rest.delete_subscription(sub)
        await rest.aclose()
        return out

    lt = LoopThread()
    try:
        out = lt.spawn(scenario()).result(60)
    finally:
        lt.close()
    assert out["idle_pulls_in_2_s"] <= 40, out  # 5 ms doubling to 100 ms: ~25, not hundreds
    assert out["got"] == [b"ping"] and out["seen_after_s"] < 0.5
    assert out["after_stop"] == []
    assert out["next_visible"] == [b64("next")]


def test_a_paced_poller_takes_a_trickle_in_batches_and_a_backlog_at_once(gcp):
    """pace=0.2: while messages trickle in (one every 20 ms) pulls come at most every 0.2 s
    and each takes several; a backlog (pulls of >= 100) is drained without waiting."""
    topic, sub = fresh("pace-topic"), fresh("pace-sub")

    async def scenario() -> dict:
        rest, client = await subscribed(gcp, topic, sub)
        stop = asyncio.Event()
        poller = Poller(client, sub, stop, idle_max=0.05, pace=0.2)

        async def trickle():
            for i in range(60):
                await rest.publish(topic, [{"data": b64(f"t{i}")}])
                await asyncio.sleep(0.02)

        async def drain(n: int) -> tuple[list[int], float]:
            sizes, t0 = [], time.monotonic()
            while sum(sizes) < n and time.monotonic() - t0 < 20:
                got = await poller.pull(1000)
                if got:
                    sizes.append(len(got))
                    await client.ack(sub, [r.ack_id for r in got])
            return sizes, time.monotonic() - t0

        feeder = asyncio.create_task(trickle())
        trickled, trickle_s = await drain(60)
        await feeder
        for k in range(5):  # a backlog of 5,000
            await rest.publish(topic, [{"data": b64(f"b{k}-{i}")} for i in range(1000)])
        backlog, backlog_s = await drain(5000)
        await client.aclose()
        await rest.delete_subscription(sub)
        await rest.aclose()
        return {"trickled": trickled, "trickle_s": trickle_s, "backlog": backlog, "backlog_s": backlog_s}

    lt = LoopThread()
    try:
        out = lt.spawn(scenario()).result(90)
    finally:
        lt.close()
    # a pull that got messages per 0.2 s at most (unpaced: one per message, 60)
    assert sum(out["trickled"]) == 60 and len(out["trickled"]) <= out["trickle_s"] / 0.2 + 2, out
    assert sum(out["trickled"]) / len(out["trickled"]) >= 3, out
    assert sum(out["backlog"]) == 5000
    # parts of >= 100 are not paced: 5,000 take far fewer than 0.2 s per part
    big = [n for n in out["backlog"] if n >= 100]
    assert out["backlog_s"] < 0.2 * len(big) / 2 + 1.0, out
