"""How long the report takes for a full simulated day.

A synthetic run directory the size the issue names (24 h in 10 s windows, 25 subscriptions,
12 services, 10 request-latency paths plus lag histograms for 9 subscriptions) is written
with tests/fixtures/synthetic_run.py, then the single-run report, junit.xml and a two-run plan
comparison are built and timed (wall clock, one process, warm imports).

    .venv/bin/python bench/bench_report.py [--dir DIR] [--keep]   (--dir with an earlier --keep reuses its days)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from surgesim.reports import build_comparison, build_report, write_junit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test fixture writes the synthetic day
from tests.fixtures.synthetic_run import write_synthetic_run  # noqa: E402

DAY = dict(duration_s=86400.0, start_clock_s=0.0, step_s=10.0, extra_subscriptions=15)
TARGET_S = 30.0


def existing(run: Path) -> Path | None:
    """Reuse a day written by an earlier --keep run: writing one takes longer than reporting it."""
    return run if (run / "summary.json").exists() else None


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: on a shared machine wall time
    mostly measures the neighbours, so both are printed."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(label: str, fn):
    t, c = time.perf_counter(), cpu_seconds()
    result = fn()
    elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
    print(f"{label:<34} {elapsed:7.1f} s wall {cpu:7.1f} s CPU")
    return result, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="where to write the run directories (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    args = ap.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        run, _ = timed("write synthetic day (baseline)", lambda: existing(base / "day-baseline")
                       or write_synthetic_run(base / "day-baseline", **DAY))
        ts = pd.read_parquet(run / "timeseries.parquet")
        hist = pd.read_parquet(run / "histograms.parquet")
        print(f"  timeseries rows {len(ts):,} ({ts['entity'].nunique()} entities), histogram rows {len(hist):,} "
              f"({hist['path'].nunique()} paths), {sum(f.stat().st_size for f in run.iterdir()) / 1e6:.0f} MB")
        del ts, hist
        _, cli = timed("surgesim report (new process)", lambda: subprocess.run(
            [sys.executable, "-m", "surgesim.cli", "report", str(run)], check=True, capture_output=True))
        _, single = timed("build_report (day, warm imports)", lambda: build_report(run))
        timed("write_junit (day)", lambda: write_junit(run))
        lean, _ = timed("write synthetic day (lean)", lambda: existing(base / "day-lean")
                        or write_synthetic_run(base / "day-lean", plan="lean", capacity=0.5, **DAY))
        _, compare = timed("build_comparison (2 days)", lambda: build_comparison([run, lean], base / "compare"))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:,.0f} MB; target {TARGET_S:.0f} s per report: "
              f"{'met' if max(cli, single) < TARGET_S else 'MISSED'} "
              f"(CLI {cli:.1f} s, in-process {single:.1f} s, comparison {compare:.1f} s)")
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")


if __name__ == "__main__":
    main()
