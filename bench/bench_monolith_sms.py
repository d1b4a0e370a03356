"""The monolith's mark_delivered p99 over scenarios/sms_slowdown.yaml's day against the SMS
slowdown's window, shape, start and seed (the reference: 4.6 s; docs/simulator.md,
"Relational store", quotes this table).

    .venv/bin/python bench/bench_monolith_sms.py

Each row is one simulated day of commands (gps dropped: the monolith's command path does
not read it) with plans/monolith.yaml; "gradual" slows the gateway from its ~200 ms to the
fault's 6 s (p99 9 s) over the whole window, "at once" gives it the fault's latency from
the window's first second."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.test_sim_monolith_sms import slowdown  # noqa: E402

BAND = (4.6 * 0.85, 4.6 * 1.15)


def row(label: str, p99: float) -> None:
    mark = "within 15%" if BAND[0] <= p99 <= BAND[1] else ""
    print(f"| {label} | {p99:.2f} s | {mark} |", flush=True)


def main() -> None:
    t0 = time.monotonic()
    print("| slowdown (from 14:00 unless said) | mark_delivered p99 | vs 4.6 s |\n| --- | --- | --- |")
    for w in (5, 7.5, 8, 9, 9.5, 10, 15, 30):
        row(f"at once, {w:g} min", slowdown(w, ramp=False))
    for w in (15, 20, 21, 22, 25, 30, 40, 45, 50, 60, 90):
        row(f"gradual, {w} min", slowdown(w))
    for h in (10, 17, 20):
        row(f"gradual, 30 min from {h}:00", slowdown(30, at_h=h))
    for seed in (1, 2, 3):
        row(f"gradual, 30 min, seed {seed}", slowdown(30, seed=seed))
    print(f"\n{time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
