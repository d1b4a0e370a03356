"""The gRPC proxy in front of the real Pub/Sub emulator, used by the unmodified official client."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from surgesim.emulators.grpc_proxy import PubSubProxy, sampler_sink
from surgesim.emulators.metrics import MetricsSampler
from surgesim.emulators.pubsub_rest import PubSubRest
from surgesim.rundir import METRICS
from tests.integration.bridges_support import LoopThread, fresh, wait_until

pytestmark = pytest.mark.integration


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _proxy_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("surgesim-grpc-proxy")]


@pytest.fixture
def proxy(gcp, monkeypatch):
    """A proxy in front of the session's emulator; the official clients point at it by env,
    as a user's service would."""
    p = PubSubProxy(gcp.endpoint("pubsub")).start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", p.endpoint)
    try:
        yield p
    finally:
        p.stop()
        assert not _port_open(p.port)
        assert not _proxy_threads()


@pytest.fixture
def clients(proxy):
    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    yield pub, sub
    sub.close()
    pub.transport.close()


def _topic_and_sub(gcp, pub, sub, **sub_kwargs):
    t, s = fresh("t-proxy"), fresh("s-proxy")
    tp, sp = pub.topic_path(gcp.project, t), sub.subscription_path(gcp.project, s)
    pub.create_topic(name=tp)
    sub.create_subscription(request={"name": sp, "topic": tp, "ack_deadline_seconds": 30, **sub_kwargs})
    return t, s, tp, sp


def _stop(future) -> None:
    future.cancel()
    try:
        future.result(timeout=10)
    except Exception:  # noqa: BLE001 -- cancelled
        pass


def test_streaming_pull_acks_n_of_m_and_the_proxy_reports_n_acked_and_m_minus_n_outstanding(gcp, proxy, clients):
    pub, sub = clients
    m_total, n_acked = 30, 18
    t, s, tp, sp = _topic_and_sub(gcp, pub, sub)
    for f in [pub.publish(tp, str(i).encode(), i=str(i)) for i in range(m_total)]:
        f.result(timeout=30)
    held, lock = {}, threading.Lock()

    def callback(message):
        i = int(message.data)
        if i < n_acked:
            message.ack()
        else:  # held: the client keeps extending its lease, never acks
            with lock:
                held[message.message_id] = message.publish_time.timestamp()

    future = sub.subscribe(sp, callback, flow_control=pubsub_v1.types.FlowControl(max_messages=m_total))
    try:
        assert wait_until(lambda: proxy.acked(s) == n_acked and len(held) == m_total - n_acked, timeout=30)
        time.sleep(0.3)  # nothing else may arrive
        count, oldest = proxy.outstanding(s)
        assert proxy.acked(s) == n_acked
        assert count == m_total - n_acked == len(held)
        assert oldest == pytest.approx(min(held.values()), abs=1e-3)
        now = time.time()
        assert proxy.oldest_unacked_age(s, now) == pytest.approx(now - min(held.values()), abs=1e-3)
        assert proxy.published(t) == m_total
        assert proxy.delivered(s) == m_total
        assert proxy.nacked(s) == 0
        assert set(proxy.book.subs[s].outstanding) == set(held)
    finally:
        _stop(future)
        sub.delete_subscription(subscription=sp)
        pub.delete_topic(topic=tp)


def test_nacks_are_counted_and_redelivered_messages_settle_once(gcp, proxy, clients):
    pub, sub = clients
    m_total, n_nack = 12, 4
    t, s, tp, sp = _topic_and_sub(gcp, pub, sub)
    for f in [pub.publish(tp, str(i).encode()) for i in range(m_total)]:
        f.result(timeout=30)
    seen, lock = set(), threading.Lock()

    def callback(message):
        i = int(message.data)
        with lock:
            first = i not in seen
            seen.add(i)
        if i < n_nack and first:
            message.nack()
        else:
            message.ack()

    future = sub.subscribe(sp, callback)
    try:
        assert wait_until(lambda: proxy.acked(s) == m_total, timeout=30)
        time.sleep(0.3)
        totals = proxy.totals()["subscriptions"][s]
        assert proxy.nacked(s) == n_nack
        assert totals["redelivered"] == n_nack
        assert totals["delivered"] == m_total + n_nack
        assert proxy.acked(s) == m_total
        assert proxy.outstanding(s) == (0, None)
    finally:
        _stop(future)
        sub.delete_subscription(subscription=sp)
        pub.delete_topic(topic=tp)


def test_admin_calls_errors_and_unknown_methods_pass_through(gcp, proxy, clients):
    pub, sub = clients
    t, s, tp, sp = _topic_and_sub(gcp, pub, sub, filter='attributes.k = "v"')
    try:
        got = sub.get_subscription(subscription=sp)
        assert got.topic == tp and got.ack_deadline_seconds == 30 and got.filter == 'attributes.k = "v"'
        updated = sub.update_subscription(request={"subscription": {"name": sp, "ack_deadline_seconds": 45},
                                                   "update_mask": {"paths": ["ack_deadline_seconds"]}})
        assert updated.ack_deadline_seconds == 45
        assert sp in [x.name for x in sub.list_subscriptions(project=f"projects/{gcp.project}")]
        assert sp in list(pub.list_topic_subscriptions(topic=tp))
        assert pub.get_topic(topic=tp).name == tp
        # the emulator's status codes reach the client unchanged
        with pytest.raises(gexc.AlreadyExists):
            pub.create_topic(name=tp)
        with pytest.raises(gexc.NotFound):
            sub.get_subscription(subscription=sp + "-missing")
        # sync Pull + Acknowledge are counted too
        pub.publish(tp, b"x", k="v").result(timeout=30)
        received = []
        assert wait_until(lambda: received.extend(
            sub.pull(subscription=sp, max_messages=10, timeout=10).received_messages) or received, timeout=20)
        sub.acknowledge(subscription=sp, ack_ids=[r.ack_id for r in received])
        assert proxy.delivered(s) == 1 and proxy.acked(s) == 1
    finally:
        sub.delete_subscription(subscription=sp)
        pub.delete_topic(topic=tp)
    with pytest.raises(gexc.NotFound):
        sub.get_subscription(subscription=sp)
    # Methods the proxy does not know are forwarded as raw bytes too (Pub/Sub ones as unary
    # calls, others as streams): the client gets the emulator's own answer.
    def check(endpoint, method):
        with grpc.insecure_channel(endpoint) as ch:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary(method)(b"", timeout=10)
            return err.value.code(), err.value.details()
    for method in ("/google.pubsub.v1.Publisher/NoSuchMethod", "/grpc.health.v1.Health/Check"):
        direct = check(gcp.endpoint("pubsub"), method)
        assert direct[0] == grpc.StatusCode.UNIMPLEMENTED
        assert check(proxy.endpoint, method) == direct
    assert proxy.errors == 0


def test_stop_with_an_open_streaming_pull_closes_the_port_and_leaves_no_thread(gcp, clients, monkeypatch):
    pub, sub = clients
    t, s, tp, sp = _topic_and_sub(gcp, pub, sub)
    p = PubSubProxy(gcp.endpoint("pubsub")).start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", p.endpoint)
    own = pubsub_v1.SubscriberClient()
    got = []
    future = own.subscribe(sp, lambda m: (got.append(m), m.ack()))
    try:
        pub.publish(tp, b"x").result(timeout=30)
        assert wait_until(lambda: p.acked(s) == 1, timeout=20)
        thread = p._thread
        assert thread.is_alive()
        p.stop(grace=0.5)
        assert not _port_open(p.port)
        assert not thread.is_alive()
        p.stop()  # idempotent
    finally:
        _stop(future)
        own.close()
        p.stop()
        sub.delete_subscription(subscription=sp)
        pub.delete_topic(topic=tp)


def test_metrics_sampler_reports_backlog_of_a_pull_subscription_consumed_through_the_proxy(gcp, proxy, clients):
    pub, sub = clients
    m_total, n_acked = 20, 15
    t, s, tp, sp = _topic_and_sub(gcp, pub, sub)
    lt = LoopThread()
    rest = PubSubRest(gcp.endpoint("pubsub"), gcp.project)
    sampler = MetricsSampler(rest, [(s, t, None)], interval=0.2)
    lt.run(sampler.provision())
    proxy.book.on_settled = sampler_sink(sampler, lt.loop)
    sampler.observe(s)
    run = lt.spawn(sampler.run())
    future = None
    try:
        for f in [pub.publish(tp, str(i).encode()) for i in range(m_total)]:
            f.result(timeout=30)
        future = sub.subscribe(sp, lambda m: m.ack() if int(m.data) < n_acked else None)

        def last(key):
            rows = [r for r in sampler.rows if r["metric"] == METRICS[key] and r["entity"] == s]
            return rows[-1]["value"] if rows else None

        assert wait_until(lambda: last("backlog") == m_total - n_acked, timeout=30)
        assert sampler.totals()[s] == {"published": m_total, "acked": n_acked, "dead_lettered": 0,
                                       "filtered": 0, "backlog": m_total - n_acked}
        assert wait_until(lambda: (last("oldest_unacked") or 0) > 0, timeout=10)
    finally:
        if future is not None:
            _stop(future)
        lt.loop.call_soon_threadsafe(sampler.stop)
        run.result(10)
        lt.run(rest.aclose())
        lt.close()
        sub.delete_subscription(subscription=sp)
        pub.delete_topic(topic=tp)


def test_upstream_down_reaches_the_client_as_unavailable_and_stop_frees_the_port():
    from surgesim.emulators.process import free_port

    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    p = PubSubProxy(dead).start()
    try:
        with grpc.insecure_channel(p.endpoint) as ch:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary("/google.pubsub.v1.Publisher/GetTopic")(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _port_open(p.port)
    finally:
        thread = p._thread
        p.stop()
    assert not _port_open(p.port)
    assert not thread.is_alive()
