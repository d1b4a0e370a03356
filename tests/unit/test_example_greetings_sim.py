"""examples/greetings/slow_api.yaml in the simulator: the moderation API slows from 20 ms to
1.5 s over a 30 s ramp, and the push subscription's lag must follow it gradually (its live
twin is test_a_ramped_slow_api_raises_the_push_lag_gradually_and_nothing_is_lost in
tests/integration/test_example_greetings.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from surgesim.rundir import load_run
from tests.unit.greetings_windows import lag_p50s

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "examples" / "greetings" / "slow_api.yaml"


def test_the_simulated_slow_api_raises_the_push_lag_along_its_ramp(tmp_path):
    out = tmp_path / "run"
    rc = subprocess.run([sys.executable, "-m", "surgesim.cli", "sim", str(SCENARIO), "--out", str(out), "--no-report"],
                        capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stdout[-3000:] + rc.stderr[-3000:]
    (fault,) = json.loads((out / "faults.json").read_text())
    assert (fault["kind"], fault["target"], fault["start_s"], fault["end_s"]) == \
        ("dependency_latency", "moderation-api", 10.0, 55.0)
    assert fault["details"]["ramp_s"] == 30.0 and "ramp_updates" not in fault["details"]  # live only

    run = load_run(out)
    assert run.summary["verdict"] == "pass"
    assert run.summary["totals"]["apis"]["moderation-api"]["calls"] == \
        run.summary["totals"]["subscriptions"]["greetings-push"]["acked"]  # one call per greeting

    figures = lag_p50s(run, after=(56, 60))
    before, first, middle, last, held, after = (figures[k] for k in ("before", "first", "middle", "last", "held", "after"))
    assert before < 0.1 and after < 0.1, figures  # the API's 20 ms and the handler's few ms
    assert first < middle < last and last > 2.5 * first, figures  # gradual, not one step
    assert 0.1 < first < 0.6 and 0.9 < last < 1.6, figures
    assert 1.3 < held < 1.8, figures  # the fault's p50 1.5 s
