"""Pub/Sub's push flow control, one model for both engines (the simulator's broker and the
live push bridge), so a push backlog means the same thing in `sim` and `live`.

From Pub/Sub's documentation ("Push subscriptions", delivery rate and push backoff): the
number of concurrent push requests is capped by a *push window* that starts at "a small
single-digit window size", increases on every successful delivery (so it doubles every
round trip: slow start), decreases on every failure, and "should expand enough to keep up
with any publish throughput" only for subscribers that ack > 99% of messages within a
second. Read here as: a success slower than a second does not grow the window (it does not
shrink it either: the documentation shrinks only on failures), a failure halves it, and
after failures delivery pauses (push backoff, 100 ms doubling to 60 s).

Before this module the simulator started at 10 and grew on slow successes too, while the
bridge started at 3 and *shrank* on slow ones; a calibration fitted on one scenario then
predicted a second with the push backlogs 1.3-2.2x apart (docs/calibration.md).
"""

from __future__ import annotations

#: The push window Pub/Sub starts with ("a small single-digit window size").
INITIAL_WINDOW = 3
#: Successes slower than this do not grow the window.
SLOW_REQUEST_S = 1.0
PUSH_BACKOFF_MIN_S = 0.1
PUSH_BACKOFF_MAX_S = 60.0


class PushWindow:
    """How many push requests may be in flight for one subscription."""

    def __init__(self, maximum: float = 1000, initial: int = INITIAL_WINDOW, slow_s: float = SLOW_REQUEST_S) -> None:
        self.maximum = max(1.0, float(maximum))
        self.size = float(min(initial, self.maximum))
        self.slow_s = slow_s
        self.consecutive_failures = 0

    @property
    def limit(self) -> int:
        return max(1, int(self.size))

    def grow(self, fast_successes: int) -> None:
        """Widen by one per success that came back within `slow_s`."""
        if fast_successes > 0:
            self.consecutive_failures = 0
            self.size = min(self.maximum, self.size + fast_successes)

    def on_success(self, latency_s: float) -> None:
        self.consecutive_failures = 0
        self.grow(1 if latency_s <= self.slow_s else 0)

    def on_failure(self) -> float:
        """Halve and return the push backoff (seconds to pause delivery)."""
        self.consecutive_failures += 1
        self.size = max(1.0, self.size / 2.0)
        return min(PUSH_BACKOFF_MAX_S, PUSH_BACKOFF_MIN_S * 2 ** (self.consecutive_failures - 1))
