"""Cloud Scheduler's unix-cron, on a scenario's clock: when a `schedule:` source starts its
Cloud Run job (docs/live.md, "Cloud Run Jobs"). Both engines take their start times from
fire_times, so the simulator and a live run start the same executions at the same
scenario seconds.

Five fields, minute hour day-of-month month day-of-week, each `*`, a number, a range
`a-b`, a step `*/n` or `a-b/n`, or a comma list of those. A scenario's clock has times of
day (start_clock + t, wrapping at midnight) and no dates, so the three date fields must
be `*`: a schedule that names days would start jobs on whatever day a run pretended to
be, and a rehearsal of a day lasts at most a few days anyway. Parsed here rather than by a
cron library because only the minute and hour fields have a meaning on that clock.
"""

from __future__ import annotations

import math

DAY = 86400.0
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7))
MAX_STARTS = 10_000
"""At most this many starts in one run (every minute for a week is 10,080)."""


class CronError(ValueError):
    pass


def _field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name} {part!r}: the step after / is a whole number >= 1")
            step = int(step_text)
        if body == "*":
            first, last = lo, hi
        elif body.isdigit():
            first = last = int(body)
            if step_text:  # `5/15` means different things to different crons: say which
                raise CronError(f"{name} {part!r}: a step goes with * or a range a-b (e.g. {body}-{hi}/{step})")
        else:
            a, dash, b = body.partition("-")
            if not dash or not a.isdigit() or not b.isdigit():
                raise CronError(f"{name} {part!r}: not *, a number, a range a-b or a step */n")
            first, last = int(a), int(b)
            if first > last:
                raise CronError(f"{name} {part!r}: the range runs backwards")
        if first < lo or last > hi:
            raise CronError(f"{name} {part!r}: {name} is {lo}-{hi}")
        out.update(range(first, last + 1, step))
    return frozenset(out)


def parse(expr: str) -> tuple[frozenset[int], frozenset[int]]:
    """(minutes, hours) of a five-field unix-cron expression; CronError says what is wrong."""
    fields = expr.split()
    if len(fields) != 5:
        raise CronError(f"{expr!r}: unix-cron has 5 fields (minute hour day-of-month month day-of-week), "
                        f"got {len(fields)}; e.g. '*/30 * * * *'")
    parsed = [_field(f, name, lo, hi) for f, (name, lo, hi) in zip(fields, _FIELDS)]
    dated = [name for f, (name, _, _) in zip(fields[2:], _FIELDS[2:]) if f != "*"]
    if dated:
        raise CronError(f"{expr!r}: {', '.join(dated)} must be *: a scenario's clock has times of day, not dates")
    return parsed[0], parsed[1]


def fire_times(expr: str, start_clock: float, duration: float) -> list[float]:
    """Scenario seconds in [0, duration) at which the clock (start_clock + t) is at the
    start of a minute the schedule names."""
    minutes, hours = parse(expr)
    out = []
    m = math.ceil(start_clock / 60.0 - 1e-9)
    while (t := m * 60.0 - start_clock) < duration:
        minute_of_day = m % 1440
        if minute_of_day % 60 in minutes and minute_of_day // 60 in hours:
            out.append(max(t, 0.0))
            if len(out) > MAX_STARTS:
                raise CronError(f"{expr!r}: more than {MAX_STARTS:,} starts in {duration:g} s")
        m += 1
    return out
