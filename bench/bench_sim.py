"""Simulator benchmarks.

    .venv/bin/python bench/bench_sim.py accuracy   # fluid vs per-message on a reduced wave
    .venv/bin/python bench/bench_sim.py day        # scenarios/meridian_day.yaml: wall, peak RSS (--no-split: one process)
    .venv/bin/python bench/bench_sim.py split      # one process vs two on 07:00-08:00 of meridian_day

`accuracy` runs a 20-minute cut of the dispatch wave (commands, events, reactors; the
wave at minute 5) once with the default engine (fluid queues on busy steps) and once
with --exact (per-message queues everywhere), and prints p50/p99 per latency and lag path
and peak backlogs side by side with the relative difference."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))


def side_by_side(test, ref, labels: tuple[str, str]) -> float:
    """Print p50/p99 per latency and lag path and peak backlogs of two finished engines;
    returns the worst relative difference from `ref`."""
    worst = 0.0
    print(f"{'path':45s} {labels[0]:>10s} {labels[1]:>10s} {'diff':>7s}")
    for path in sorted(ref.metrics.totals):
        ht, hr = test.metrics.totals[path], ref.metrics.totals[path]
        if hr.count < 1000:
            continue
        for q in (50, 99):
            a, b = ht.percentile(q), hr.percentile(q)
            d = abs(a - b) / b if b else 0.0
            worst = max(worst, d)
            print(f"{path + f' p{q}':45s} {a * 1000:9.2f}ms {b * 1000:9.2f}ms {d:7.2%}")
    for name in sorted(ref.broker.subs):
        a = test.metrics.gauges[("backlog", name)].max()
        b = ref.metrics.gauges[("backlog", name)].max()
        if b >= 100:
            d = abs(a - b) / b
            worst = max(worst, d)
            print(f"{'peak backlog ' + name:45s} {a:10.0f} {b:10.0f} {d:7.2%}")
    return worst


def accuracy() -> int:
    from test_sim_engine import trimmed

    from surgesim.sim.engine import Engine

    exp = trimmed("dispatch_wave.yaml", duration=1200, shift=85 * 60, drop=("gps",))
    runs = {}
    for exact in (False, True):
        began = time.process_time()
        eng = Engine(exp, exact=exact).run()
        runs[exact] = (eng, time.process_time() - began)
    worst = side_by_side(runs[False][0], runs[True][0], ("fluid", "exact"))
    print(f"cpu: fluid {runs[False][1]:.1f} s, exact {runs[True][1]:.1f} s; worst difference {worst:.2%}")
    return 0 if worst <= 0.05 else 1


def split() -> int:
    """The two-process run against one process on the busiest hour of the day (the wave at
    07:30, all sources): p50/p99 per path and peak backlogs, and the wall time of each."""
    from test_sim_engine import trimmed

    from surgesim.sim.engine import Engine
    from surgesim.sim.split import run_experiment

    exp = trimmed("meridian_day.yaml", duration=3600, shift=7 * 3600)
    t = time.perf_counter()
    one = Engine(exp).run()
    t_one = time.perf_counter() - t
    t = time.perf_counter()
    two = run_experiment(exp)
    t_two = time.perf_counter() - t
    worst = side_by_side(two, one, ("split", "one"))
    print(f"wall: one process {t_one:.1f} s, split {t_two:.1f} s; worst difference {worst:.2%}")
    return 0 if worst <= 0.05 else 1


def day() -> int:
    from surgesim.schema import load_experiment
    from surgesim.sim.split import run_experiment

    exp = load_experiment(ROOT / "scenarios" / "meridian_day.yaml")
    split = "--no-split" not in sys.argv
    began, cpu = time.perf_counter(), time.process_time()
    eng = run_experiment(exp, split=split)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pings = eng.broker.topic_totals["vehicle.telemetry"]["published"]
    print(f"meridian_day ({'split' if eng.cut else 'one process'}): {pings:,} pings, wall {wall:.1f} s, "
          f"cpu {cpu:.1f} s + {child.ru_utime:.1f} s upstream, peak RSS {rss:.0f} MiB (upstream {child.ru_maxrss / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit({"accuracy": accuracy, "day": day, "split": split}[sys.argv[1] if len(sys.argv) > 1 else "accuracy"]())
