"""Pure logic of the push bridge: push window, retry backoff, envelope."""

from __future__ import annotations

from surgesim.emulators.push import ACK_STATUS, build_envelope, retry_backoff
from surgesim.pubsub_push import INITIAL_WINDOW, PUSH_BACKOFF_MAX_S, PushWindow


def test_window_starts_small_and_doubles_per_round_trip_of_successes():
    w = PushWindow(maximum=1000)
    assert w.limit == INITIAL_WINDOW < 10
    for _ in range(3):  # one round trip: every request in the window succeeds fast
        n = w.limit
        for _ in range(n):
            w.on_success(0.05)
        assert w.limit == 2 * n


def test_window_capped_halved_on_failure_and_not_grown_by_slow_requests():
    w = PushWindow(maximum=10)
    for _ in range(100):
        w.on_success(0.01)
    assert w.limit == 10
    w.on_failure()
    assert w.limit == 5
    for _ in range(20):
        w.on_success(5.0)  # slower than a second: neither grows nor shrinks (only failures do)
    assert w.limit == 5
    for _ in range(10):
        w.on_failure()
    assert w.limit == 1  # never below one


def test_push_backoff_doubles_from_100ms_to_60s_and_resets_on_success():
    w = PushWindow()
    pauses = [w.on_failure() for _ in range(12)]
    assert pauses[:4] == [0.1, 0.2, 0.4, 0.8]
    assert pauses[-1] == PUSH_BACKOFF_MAX_S
    w.on_success(0.01)
    assert w.on_failure() == 0.1


def test_retry_backoff_exponential_between_min_and_max():
    assert [retry_backoff(a, 10, 600) for a in range(1, 9)] == [10, 20, 40, 80, 160, 320, 600, 600]
    assert retry_backoff(1, None, None) == 0.0  # no retry policy: redeliver at once
    assert retry_backoff(3, 0.0, 0.0) == 0.0


def test_ack_status_codes_are_pubsubs():
    assert ACK_STATUS == {102, 200, 201, 202, 204}
    assert 429 not in ACK_STATUS and 203 not in ACK_STATUS


def test_envelope_matches_pubsub_wrapped_format():
    received = {
        "ackId": "x",
        "message": {"data": "aGk=", "attributes": {"a": "1"}, "messageId": "42", "publishTime": "2024-01-01T00:00:00.123Z"},
        "deliveryAttempt": 3,
    }
    env = build_envelope(received, "projects/p/subscriptions/s")
    assert env == {
        "message": {
            "data": "aGk=",
            "attributes": {"a": "1"},
            "messageId": "42",
            "message_id": "42",
            "publishTime": "2024-01-01T00:00:00.123Z",
            "publish_time": "2024-01-01T00:00:00.123Z",
        },
        "subscription": "projects/p/subscriptions/s",
        "deliveryAttempt": 3,
    }
    bare = build_envelope({"ackId": "y", "message": {"messageId": "1", "publishTime": "t"}}, "s")
    assert "attributes" not in bare["message"] and "deliveryAttempt" not in bare and bare["message"]["data"] == ""
