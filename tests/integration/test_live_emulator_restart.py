"""`emulator_restart` live: the Pub/Sub emulator is frozen (SIGSTOP of its process group)
for the fault's window and thawed after it with its state, so that, as in the simulator,
nothing is delivered in the window, everything is delivered after it, and no message is
lost. The run is ci_spike shortened to 4 scenario minutes (16 wall seconds) with the
emulator out from minute 1 to minute 3 (8 wall seconds) at time_scale 15
(tests/integration/scenarios/ci_spike_emulator_restart.yaml). About 60-90 s wall."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from surgesim.rundir import load_run
from surgesim.schema import load_experiment
from tests.integration.meridian_copy import isolated

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "ci_spike_emulator_restart.yaml"
WINDOW_WALL_S = 8.0  # 2 scenario minutes at time_scale 15
RUN_TIMEOUT = 240  # ~70 s here; a hung run fails the test instead of the suite


def test_emulator_restart_delivers_nothing_in_the_window_then_everything(gcp, tmp_path):
    scenario = isolated(SCENARIO, tmp_path / "system")  # counts every message: its own project
    project = load_experiment(scenario).system.project
    sub_url = f"http://{gcp.endpoint('pubsub')}/v1/projects/{project}/subscriptions/telemetry-livemap"
    out, log = tmp_path / "run", tmp_path / "run.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "live", str(scenario), "--out", str(out),
                                 "--state-dir", str(gcp.state_dir)], stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "COLUMNS": "200"})
    text = lambda: log.read_text(errors="replace")  # noqa: E731
    probes: dict[str, object] = {}
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"surgesim live did not finish in {RUN_TIMEOUT}s:\n{text()[-3000:]}"
            log_now = text()
            if "frozen" not in probes and "emulator_restart on pubsub started" in log_now:
                # from outside the harness: the emulator answers nothing while frozen
                try:
                    httpx.get(sub_url, timeout=1.5, trust_env=False)
                    probes["frozen"] = "answered"
                except httpx.TimeoutException:
                    probes["frozen"] = "timeout"
            if "thawed" not in probes and "emulator_restart on pubsub ended" in log_now:
                # ... and after the window it answers, with the run's subscription still there
                probes["thawed"] = httpx.get(sub_url, timeout=10, trust_env=False).status_code
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # lets the harness thaw the emulator and stop its processes
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, text()[-3000:]
    assert probes == {"frozen": "timeout", "thawed": 200}, (probes, text()[-2000:])

    (ev,) = [e for e in json.loads((out / "faults.json").read_text()) if e["kind"] == "emulator_restart"]
    d = ev["details"]
    assert ev["start_s"] == 60.0 and ev["end_s"] >= 180.0
    assert "SIGSTOP" in d["method"] and any(p["name"] == "java" for p in d["processes"]), d
    assert WINDOW_WALL_S - 0.5 <= d["frozen_wall_s"] <= WINDOW_WALL_S + 4, d  # the main loop ticks every 0.2 s
    # no delivery in the window: neither the push bridges nor the pull workers (through the
    # counting gRPC proxy) got a message from the emulator; acks reported inside can only be
    # pushes delivered before the freeze (their handlers answering late on a loaded machine)
    delivered = d["delivered_inside"]
    assert {"telemetry-livemap", "telemetry-geofence", "notification-sub", "eta-sub"} <= set(delivered)
    assert sum(delivered.values()) == 0, delivered
    assert set(d["settled_inside"]) >= {"telemetry-livemap", "notification-sub"}

    summary = json.loads((out / "summary.json").read_text())
    cons = summary["conservation"]
    assert cons["ok"], cons
    observed = {k: v for k, v in cons["subscriptions"].items() if v["observed"]}
    left = {k: v for k, v in observed.items() if v["balance"] != 0 or v["backlog"] != 0}
    assert not left, (left, text()[-3000:])
    assert all(v["emulator_visible"] == 0 for v in observed.values()), observed
    # every ping the generator published was accepted (none lost to the outage) and then
    # acked by each telemetry consumer; the ones sent in the window waited for the thaw
    gps = summary["loadgen"]["counts"]["gps"]
    assert gps["errors"] == 0 and gps["ok"] == gps["sent"] > 0, gps
    for sub in ("telemetry-livemap", "telemetry-geofence", "telemetry-bigquery"):
        assert observed[sub]["acked"] == observed[sub]["published"] == gps["ok"], (sub, observed[sub])
    waited = load_run(out).histogram("publish/vehicle.telemetry")
    assert waited.summary()["max"] >= WINDOW_WALL_S / 2, waited.summary()
    assert observed["notification-sub"]["acked"] > 0  # push deliveries resumed too
    assert gcp.refresh().emulators["pubsub"].healthy  # thawed for good
