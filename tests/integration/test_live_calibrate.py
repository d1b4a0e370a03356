"""Calibration that closes the loop, on real live runs: an 8-minute ci_spike (32 wall
seconds of traffic at time_scale 15) against the real services and emulators, then
`surgesim calibrate` on it: the simulator, run as the live run ran (wall time, live
volume) with the fitted overlay, predicts the live run's peak backlogs, drains, p50/p99
latencies and lags with a median |relative error| within the bound (20%), where the
unfitted model is far off; the report says what could not be fitted; and the same
overlay predicts a live run of a different scenario (an 8-minute ci_wave: other waves,
1.5x the fleet), which it was not fitted on, within a held-out bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from surgesim.calibrate import load, median_error
from surgesim.cli import cli
from tests.integration.meridian_copy import isolated

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHORT = ROOT / "tests" / "integration" / "scenarios" / "ci_spike_calibration.yaml"
HELD_OUT = ROOT / "tests" / "integration" / "scenarios" / "ci_wave_calibration.yaml"
BOUND = 0.20
HELD_OUT_CARRY = 0.5
"""The held-out prediction must be at most half as far off as the unfitted model's: the fit
carries over to a scenario it was not fitted on. docs/calibration.md measures 9-16% on a
quiet machine; this test's two runs share CI's 2 cores with the other worker's live test,
and saturated (load 8) the same check measured 78.5% against the unfitted model's
1,000%+: CPU saturation is what the fit does not model (docs/calibration.md)."""
RUN_TIMEOUT = 240  # ~75 s wall when quiet; a hung run fails the test instead of the suite


def live_run(scenario: Path, out: Path, gcp) -> dict:
    log = out.with_suffix(".log")
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "live", str(scenario), "--out", str(out),
                                 "--state-dir", str(gcp.state_dir)], stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "COLUMNS": "200"})
        try:
            proc.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(30)
            pytest.fail(f"surgesim live did not finish in {RUN_TIMEOUT}s:\n{log.read_text()[-3000:]}")
    assert (out / "summary.json").exists(), log.read_text()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "live" and summary["conservation"]["ok"]
    assert summary["latency"]["command.mark_delivered"]["count"] >= 20
    return summary


def test_calibrated_simulator_predicts_the_live_run_and_a_held_out_one(gcp, tmp_path):
    out, held = tmp_path / "live", tmp_path / "wave"
    # the runs count every message: their own project on the shared emulators
    short, held_out = isolated(SHORT, tmp_path / "spike-system"), isolated(HELD_OUT, tmp_path / "wave-system")
    summary = live_run(short, out, gcp)
    live_run(held_out, held, gcp)

    res = CliRunner().invoke(cli, ["calibrate", str(short), str(out), "--rounds", "3",
                                   "--predict", str(held_out), str(held)])
    assert res.exit_code == 0, res.output
    work = tmp_path / "live-calibration"
    fit = json.loads((work / "fit.json").read_text())
    best = min((r for r in fit["rounds"] if r["round"] > 0), key=lambda r: r["median"])
    after_dir = work / f"sim-round-{best['round']}"
    before, n = median_error(load(work / "sim-round-0"), load(out))
    after, m = median_error(load(after_dir), load(out))
    print(res.output, f"before {before:.3f} over {n}, after {after:.3f} over {m}")
    assert after <= BOUND, res.output
    assert before > 2 * after  # the loop closed: the unfitted model is far from the local stack
    assert m >= 25  # peaks, drains, p50/p99 of every route and lag: not a cherry-picked few
    fitted = {f["path"] for f in fit["fitted"]}
    assert {"notification-sub", "telemetry-livemap"} <= fitted
    # every route is accounted for: fitted where live is slower than the model, else said so.
    # The command routes' live p50 (~20 ms) sits within noise of the model's (~22 ms): CI runs
    # fitted two of the four, or none.
    unfitted = {u["path"]: u["why"] for u in fit["unfitted"]}
    for route in summary["latency"]:
        if route.startswith("command."):
            assert route in fitted or "live is not slower" in unfitted.get(f"latency {route}", ""), (route, unfitted)
    # the two delays that are not handler work are fitted as the plan's environment figures
    targets = {f["path"]: f["target"] for f in fit["fitted"]}
    assert targets["telemetry-bigquery"] == "subscriptions.telemetry-bigquery.write_latency"
    assert targets["parcels-outbox"] == "triggers.parcels-outbox.delivery_latency"
    md = (work / "calibration.md").read_text()
    assert "What could not be fitted" in md and "backlog peaks and drain times" in md
    # held out: the same overlay, a scenario it was not fitted on
    line = next(x for x in res.output.splitlines() if x.startswith(f"predicted {held}"))
    predicted = float(line.split("median |relative error| ")[1].split("%")[0]) / 100
    res2 = CliRunner().invoke(cli, ["sim", str(held_out), "--as-live", "--out", str(tmp_path / "held-unfitted"),
                                    "--no-report"])
    assert res2.exit_code in (0, 1), res2.output
    unfitted, _ = median_error(load(tmp_path / "held-unfitted"), load(held))
    print(f"held out: predicted {predicted:.3f}, unfitted model {unfitted:.3f}")
    assert predicted <= HELD_OUT_CARRY * unfitted, (unfitted, res.output)
    assert (tmp_path / "wave-prediction" / "calibration.md").is_file()
    # the overlay plan predicts through the ordinary command, as the report says
    overlay = out / "calibrated-plan.yaml"
    res = CliRunner().invoke(cli, ["sim", str(short), "--plan", str(overlay), "--as-live", "--out",
                                   str(tmp_path / "again"), "--no-report"])
    assert res.exit_code in (0, 1), res.output
    again, _ = median_error(load(tmp_path / "again"), load(out))
    assert again == pytest.approx(after, abs=1e-9)  # same seed, same overlay: the same prediction
