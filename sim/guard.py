"""The progress guard: a run that stops making progress ends with a clear message
(`Stalled`; `surgesim sim` exits 2) instead of spinning at 100% CPU or exhausting memory.

Two deterministic checks, so the same file stalls at the same point on every machine:

- virtual time not advancing: SimPy processing more than `max_events_at_instant` events
  without its clock moving (a zero-delay loop: a retry with no backoff and no latency);
- work exploding: more than `max_messages_per_s` x step (+ `slack`) messages handed to the
  services within one step (a publish cycle multiplying messages with no delay between).

Both are counted cheaply: an integer add per enqueued batch, and one comparison every
`check_every` SimPy events. An optional `clock` (the CLI passes time.monotonic; the model
itself reads no wall clock) adds a third: no step finished within `max_wall_per_step_s`."""

from __future__ import annotations

from typing import Callable

import simpy


MAX_EVENTS_AT_INSTANT = 1_000_000
MAX_MESSAGES_PER_S = 1e7
"""Ten times the fastest source the schema allows (limits.MAX_SOURCE_RATE_PER_S)."""
SLACK = 1_000_000
MAX_WALL_PER_STEP_S = 300.0


class Stalled(RuntimeError):
    """The simulation stopped making progress; the message says where and why."""


class Guard:
    def __init__(self, step: float, *, max_events_at_instant: int | None = None, max_messages_per_s: float | None = None,
                 slack: int | None = None, check_every: int = 1 << 14, clock: Callable[[], float] | None = None,
                 max_wall_per_step_s: float | None = None):
        # Module defaults are read here, not bound at import, so a test can lower them.
        self.max_events_at_instant = MAX_EVENTS_AT_INSTANT if max_events_at_instant is None else max_events_at_instant
        self.check_every = check_every
        rate = MAX_MESSAGES_PER_S if max_messages_per_s is None else max_messages_per_s
        self.step_limit = int(rate * step) + (SLACK if slack is None else slack)
        self.clock = clock
        self.max_wall = MAX_WALL_PER_STEP_S if max_wall_per_step_s is None else max_wall_per_step_s
        self.messages = 0  # handed to services in the current step
        self.t0 = 0.0
        self._now = -1.0
        self._at_instant = 0
        self._wall = clock() if clock is not None else 0.0

    def begin_step(self, t0: float) -> None:
        self.messages = 0
        self.t0 = t0
        if self.clock is not None:
            self._wall = self.clock()

    def expect(self, n: int) -> None:
        """Refuse before allocating: n more messages would pass the step's limit."""
        if self.messages + n > self.step_limit:
            self.add_messages(n)

    def add_messages(self, n: int) -> None:
        self.messages += n
        if self.messages > self.step_limit:
            raise Stalled(
                f"simulation stopped at t={self.t0:g}s: {self.messages:,} messages handed to services within one step "
                f"(limit {self.step_limit:,}); a publish cycle or fan-out keeps multiplying messages with no delay")
        if self.clock is not None:
            self.check_wall()

    def check_wall(self) -> None:
        if self.clock is not None and self.clock() - self._wall > self.max_wall:
            raise Stalled(f"simulation stopped at t={self.t0:g}s: one step has run for more than "
                          f"{self.max_wall:g} wall seconds")

    def events(self, now: float, n: int) -> None:
        """Called every `check_every` SimPy events with the clock."""
        if now != self._now:
            self._now, self._at_instant = now, 0
            return
        self._at_instant += n
        if self._at_instant > self.max_events_at_instant:
            raise Stalled(
                f"simulation stopped at t={now:g}s: more than {self.max_events_at_instant:,} events without virtual "
                "time advancing (a zero-delay loop, e.g. a retry with no latency and no backoff)")
        self.check_wall()


class GuardedEnvironment(simpy.Environment):
    """A SimPy environment that reports to a Guard every `check_every` events."""

    def __init__(self, guard: Guard):
        super().__init__()
        self._guard = guard
        self._mask = guard.check_every - 1
        self._n = 0

    def step(self) -> None:
        self._n += 1
        if not self._n & self._mask:
            self._guard.events(self._now, self._guard.check_every)
        super().step()


__all__ = ["Guard", "GuardedEnvironment", "Stalled"]
