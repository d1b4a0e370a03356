"""Simulator benchmarks.

    .venv/bin/python bench/bench_sim.py accuracy   # default vs per-message (--exact) vs theory where queues form
    .venv/bin/python bench/bench_sim.py day        # scenarios/meridian_day.yaml: wall, peak RSS (--no-split: one process)
    .venv/bin/python bench/bench_sim.py split      # one process vs two on 07:00-08:00 of meridian_day

`accuracy` runs queues that form (M/D/c and M/M/c at utilisation 0.5-0.97, c 1-40,
steps 1-10 s; every step through the vectorised check) once with the default engine and
once with --exact (the per-message heap everywhere), and prints mean wait, P(wait), p50
and p99 of the wait side by side with the relative difference and the theory (Erlang C,
exact M/D/c); then a 20-minute cut of the dispatch wave (commands, events, reactors; the
wave at minute 5) both ways, p50/p99 per latency and lag path and peak backlogs."""

from __future__ import annotations

import resource
import sys
import time
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


QUEUE_CASES = [  # (c, utilisation, service, step s, arrivals)
    (1, 0.5, "exponential", 1.0, 100_000),
    (1, 0.9, "constant", 10.0, 200_000),
    (4, 0.8, "exponential", 1.0, 500_000),
    (4, 0.95, "constant", 1.0, 500_000),
    (7, 0.9, "constant", 4.0, 1_000_000),
    (7, 0.9, "exponential", 4.0, 1_000_000),
    (20, 0.9, "exponential", 10.0, 1_000_000),
    (40, 0.97, "constant", 10.0, 2_000_000),
    (40, 0.97, "exponential", 10.0, 2_000_000),
]


def queues() -> float:
    """Default engine vs --exact vs theory on queues that form; returns the worst
    default-vs-exact difference."""
    import tempfile

    from mmc_cases import SERVICE_MEAN_S, mdc_theory, mmc_theory, write_case

    from surgesim.schema import load_experiment
    from surgesim.sim.engine import Engine

    worst = 0.0
    print("| queue | step | arrivals | mean wait default / exact / theory | P(wait) default / exact / theory "
          "| p50, p99 wait default / exact | worst diff vs exact | CPU default / exact | per message |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (c, rho, service, step, n) in enumerate(QUEUE_CASES):
            duration = n / (rho * c / SERVICE_MEAN_S)
            exp = load_experiment(write_case(Path(tmp) / str(i), c=c, rho=rho, service=service, step=step,
                                             duration=round(duration), seed=11))
            got = {}
            for exact in (False, True):
                began = time.process_time()
                eng = Engine(exp, exact=exact, exact_below=0).run()
                got[exact] = (eng.wait_summaries()["server"], time.process_time() - began, eng.queue_stats()["server"])
            (wf, cf, qf), (we, ce, _) = got[False], got[True]
            diff = max(abs(wf[k] - we[k]) / we[k] if we[k] else abs(wf[k]) for k in ("mean", "pwait", "p50", "p99"))
            worst = max(worst, diff)
            wq, pw = (mmc_theory if service == "exponential" else mdc_theory)(c, rho)
            kind = "M/M" if service == "exponential" else "M/D"
            share = qf["per_message"] / (qf["per_message"] + qf["vectorised"])
            print(f"| {kind}/{c} at {rho:g} | {step:g} s | {wf['count']:,} "
                  f"| {wf['mean'] * 1000:.2f} / {we['mean'] * 1000:.2f} / {wq * 1000:.2f} ms ({(wf['mean'] - wq) / wq:+.1%}) "
                  f"| {wf['pwait']:.4f} / {we['pwait']:.4f} / {pw:.4f} ({(wf['pwait'] - pw) / pw:+.1%}) "
                  f"| {wf['p50'] * 1000:.2f}, {wf['p99'] * 1000:.1f} / {we['p50'] * 1000:.2f}, {we['p99'] * 1000:.1f} ms "
                  f"| {diff:.2%} | {cf:.1f} / {ce:.1f} s | {share:.0%} |")
    return worst


def accuracy() -> int:
    from test_sim_engine import trimmed

    from surgesim.sim.engine import Engine

    worst_q = queues()

    exp = trimmed("dispatch_wave.yaml", duration=1200, shift=85 * 60, drop=("gps",))
    runs = {}
    for exact in (False, True):
        began = time.process_time()
        eng = Engine(exp, exact=exact).run()
        runs[exact] = (eng, time.process_time() - began)
    worst = side_by_side(runs[False][0], runs[True][0], ("default", "exact"))
    print(f"cpu: default {runs[False][1]:.1f} s, exact {runs[True][1]:.1f} s; worst difference {worst:.2%}")
    print(f"queues: worst difference default vs exact {worst_q:.2%}")
    return 0 if worst <= 0.02 and worst_q <= 0.02 else 1


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
