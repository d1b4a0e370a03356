"""Ack-id bookkeeping of the gRPC proxy, fed with the real protobuf wire messages."""

from __future__ import annotations

from google.pubsub_v1 import types as t

from surgesim.emulators.grpc_proxy import ProxyBook, StreamState

SUB = "projects/p/subscriptions/s"


def _wire(cls, **kw) -> bytes:
    return cls.pb()(**kw).SerializeToString()


def _received(ack_id, mid, seconds, attempt=0):
    return t.ReceivedMessage.pb()(ack_id=ack_id, delivery_attempt=attempt,
                                  message=t.PubsubMessage.pb()(message_id=mid, publish_time={"seconds": seconds}))


def _deliver_stream(book, stream, *received):
    book.observe_stream_response(stream, _wire(t.StreamingPullResponse, received_messages=list(received)))


def test_streaming_pull_acks_map_back_to_messages_and_oldest_is_the_earliest_unacked():
    book, stream = ProxyBook(), StreamState()
    book.observe_stream_request(stream, _wire(t.StreamingPullRequest, subscription=SUB, stream_ack_deadline_seconds=10))
    _deliver_stream(book, stream, _received("a1", "m1", 100), _received("a2", "m2", 90), _received("a3", "m3", 110))
    assert book.outstanding("s") == (3, 90.0)
    # later requests on the stream carry no subscription: acks are the stream's
    book.observe_stream_request(stream, _wire(t.StreamingPullRequest, ack_ids=["a2"]))
    assert book.acked("s") == 1
    assert book.outstanding("s") == (2, 100.0)
    assert book.oldest_unacked_age(SUB, now=130.0) == 30.0
    assert book.delivered("s") == 3


def test_unary_ack_of_a_redelivered_message_counts_it_once_and_drops_every_ack_id():
    settled = []
    book = ProxyBook(on_settled=lambda sub, mids: settled.append((sub, mids)))
    book.deliver(SUB, [("a1", "m1", 1.0, 0)])
    book.deliver(SUB, [("a1b", "m1", 1.0, 0)])  # deadline expired, delivered again
    assert book.totals()["subscriptions"]["s"]["redelivered"] == 1
    assert book.outstanding("s") == (1, 1.0)
    book.observe_ack(_wire(t.AcknowledgeRequest, subscription=SUB, ack_ids=["a1b"]))
    book.observe_ack(_wire(t.AcknowledgeRequest, subscription=SUB, ack_ids=["a1"]))  # the stale one, late
    assert book.acked("s") == 1
    assert book.outstanding("s") == (0, None)
    assert settled == [("s", ["m1"])]
    assert book.subs["s"].ack_ids == {} and book.subs["s"].by_message == {}
    totals = book.totals()["subscriptions"]["s"]
    assert totals["ack_requests"] == 2 and totals["unknown_acks"] == 1


def test_duplicate_delivery_after_ack_is_not_a_second_message():
    book = ProxyBook()
    book.deliver("s", [("a1", "m1", 1.0, 0)])
    book.ack("s", ["a1"])
    book.deliver("s", [("a2", "m1", 1.0, 0)])  # at-least-once duplicate
    book.ack("s", ["a2"])
    assert book.acked("s") == 1
    assert book.outstanding("s") == (0, None)
    assert book.totals()["subscriptions"]["s"]["redelivered"] == 1


def test_nack_by_modack_zero_keeps_the_message_outstanding_and_counts_the_redelivery():
    book, stream = ProxyBook(), StreamState(subscription=SUB)
    book.observe_pull(_wire(t.PullRequest, subscription=SUB, max_messages=10),
                      _wire(t.PullResponse, received_messages=[_received("a1", "m1", 5), _received("a2", "m2", 6)]))
    book.observe_modack(_wire(t.ModifyAckDeadlineRequest, subscription=SUB, ack_ids=["a1"], ack_deadline_seconds=0))
    book.observe_modack(_wire(t.ModifyAckDeadlineRequest, subscription=SUB, ack_ids=["a2"], ack_deadline_seconds=30))
    # streaming nack: a 0 among the per-id deadlines (lease extensions are not nacks)
    book.observe_stream_request(stream, _wire(t.StreamingPullRequest, modify_deadline_ack_ids=["a2", "zz"],
                                              modify_deadline_seconds=[0, 60]))
    assert book.nacked("s") == 2
    assert book.outstanding("s") == (2, 5.0)
    assert "a1" not in book.subs["s"].ack_ids  # spent
    _deliver_stream(book, stream, _received("a3", "m1", 5, attempt=2))
    assert book.totals()["subscriptions"]["s"]["redelivered"] == 1
    book.ack("s", ["a3"])
    assert book.acked("s") == 1 and book.outstanding("s") == (1, 6.0)


def test_publish_counts_stored_messages_per_topic_from_the_response():
    book = ProxyBook()
    req = _wire(t.PublishRequest, topic="projects/p/topics/orders", messages=[{"data": b"x"}] * 3)
    book.observe_publish(req, _wire(t.PublishResponse, message_ids=["1", "2", "3"]))
    book.observe_publish(req, _wire(t.PublishResponse, message_ids=["4"]))
    assert book.published("orders") == 4 and book.published("projects/p/topics/orders") == 4
    assert book.published("other") == 0


def test_a_stream_without_a_subscription_yet_is_ignored_and_a_failing_sink_does_not_break_acks():
    def broken(sub, mids):
        raise RuntimeError("sink down")

    book, stream = ProxyBook(on_settled=broken), StreamState()
    _deliver_stream(book, stream, _received("a1", "m1", 5))
    assert book.totals()["subscriptions"] == {}
    book.deliver("s", [("a1", "m1", 1.0, 0)])
    assert book.ack("s", ["a1"]) == ["m1"]
    assert book.acked("s") == 1


def test_recent_ack_memory_is_bounded():
    book = ProxyBook()
    book.RECENT = 3
    for i in range(10):
        book.deliver("s", [(f"a{i}", f"m{i}", float(i), 0)])
        book.ack("s", [f"a{i}"])
    assert list(book.subs["s"].recent_acks) == ["m7", "m8", "m9"]
    assert book.acked("s") == 10
