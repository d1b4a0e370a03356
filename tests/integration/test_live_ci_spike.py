"""`surgesim live` as CI runs it: the ci_spike scenario against the real services. The
baseline plan meets its SLOs (exit 0) and loses no message; the deliberately weak plan
fails (exit 1, the failing SLO named); Ctrl-C mid-run stops everything. Each full run takes
about 2 wall minutes on 2 cores, the interrupted one about 30 s; every process the run
started is gone afterwards (checked with psutil on the run's process tree, sampled while
it ran)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPIKE = ROOT / "scenarios" / "ci_spike.yaml"
RUN_TIMEOUT = 330  # ci_spike is ~2 min wall (4 under heavy load); a hung run fails the test instead of the suite


class LiveRun:
    """`surgesim live` as a subprocess whose process tree is sampled while it runs."""

    def __init__(self, gcp, out: Path, *extra: str) -> None:
        self.out = out
        self.log = out.with_suffix(".log")
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "live", str(SPIKE), "--out", str(out),
                                          "--state-dir", str(gcp.state_dir), *extra], stdout=f,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "COLUMNS": "200"})
        self.seen: dict[int, psutil.Process] = {}

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def sample(self) -> None:
        try:
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass

    def wait(self, until: str | None = None, timeout: float = RUN_TIMEOUT) -> int | None:
        """Sample until the process exits (or, with `until`, until its output contains it)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.sample()
            if until is not None and until in self.text():
                return None
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"surgesim live did not finish within {timeout}s:\n{self.text()[-3000:]}")
            time.sleep(0.5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for p in self.left():
            p.kill()

    def left(self) -> list[psutil.Process]:
        out = []
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    def assert_nothing_left(self) -> None:
        assert len(self.seen) >= 5, f"the run's processes were not observed: {self.seen}"
        left = self.left()
        assert not left, f"left running: {[(p.pid, p.cmdline()) for p in left]}"

    def summary(self) -> dict:
        assert (self.out / "summary.json").exists(), self.text()[-3000:]
        return json.loads((self.out / "summary.json").read_text())


def run_live(gcp, tmp_path, *extra) -> tuple[int, dict, LiveRun]:
    run = LiveRun(gcp, tmp_path / "run", *extra)
    try:
        rc = run.wait()
    finally:
        run.kill()
    run.assert_nothing_left()
    return rc, run.summary(), run


def test_ci_spike_baseline_passes_and_conserves_every_message(gcp, tmp_path):
    rc, summary, run = run_live(gcp, tmp_path)
    assert summary["mode"] == "live" and summary["scales"] == {"time_scale": 15.0, "rate_scale": 0.3}
    cons = summary["conservation"]
    assert cons["ok"], cons
    observed = {k: v for k, v in cons["subscriptions"].items() if v["observed"]}
    assert observed["notification-sub"]["acked"] > 0 and observed["telemetry-livemap"]["acked"] > 0
    assert all(v["balance"] == 0 for v in observed.values())
    # where the ledger says empty, the emulator, counted independently, holds nothing either
    assert all(v["emulator_visible"] == 0 for v in observed.values() if v["backlog"] == 0), observed
    assert summary["latency"]["command.mark_delivered"]["count"] >= 20  # 30 at load average 29, ~110 when quiet
    assert summary["loadgen"]["generator"] == "fleet_driver"
    assert summary["totals"]["services"]["command"]["rejected"] == 0
    for name in ("junit.xml", "timeseries.parquet", "histograms.parquet", "report.html"):
        assert (tmp_path / "run" / name).exists(), name
    junit = (tmp_path / "run" / "junit.xml").read_text()
    assert 'failures="0"' in junit and "latency.command.mark_delivered" in junit
    assert rc == 0, run.text()[-3000:]
    assert summary["verdict"] == "pass"


def test_ci_spike_on_the_weak_plan_fails_and_names_the_slo(gcp, tmp_path):
    rc, summary, run = run_live(gcp, tmp_path, "--plan", str(ROOT / "scenarios" / "plans" / "weak.yaml"))
    assert rc == 1, run.text()[-3000:]
    assert summary["verdict"] == "fail"
    # one instance taking one request at a time, with no queueing: the spike's overlapping
    # commands get 429 (scenarios/plans/weak.yaml), whatever this machine's speed
    failing = [s["text"] for s in summary["slos"] if not s["holds"]]
    assert "max(rejected.command) == 0" in failing, summary["slos"]
    assert summary["totals"]["services"]["command"]["rejected"] > 0
    row = next(line for line in run.text().splitlines() if "max(rejected.command) == 0" in line)
    assert "FAILS" in row  # the verdict table names it
    assert summary["conservation"]["ok"]  # a weak plan is slow, not lossy
    junit = (tmp_path / "run" / "junit.xml").read_text()
    assert "<failure" in junit


def test_ctrl_c_mid_run_stops_everything(gcp, tmp_path):
    run = LiveRun(gcp, tmp_path / "run")
    try:
        assert run.wait(until="wall   10.") is None, run.text()[-3000:]
        assert run.proc.poll() is None
        run.sample()
        run.proc.send_signal(signal.SIGINT)
        rc = run.wait(timeout=90)
    finally:
        run.kill()
    assert rc == 130, run.text()[-3000:]
    assert "; everything stopped; partial run directory: " in run.text(), run.text()[-2000:]
    run.assert_nothing_left()
    # what was measured until the signal (issue 20)
    partial = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert partial["interrupted"] is True and partial["interrupted_at_s"] >= 150  # scenario s (10 wall s x 15)
    assert partial["totals"]["services"]["command"]["requests"] > 0
    assert gcp.refresh().emulators["pubsub"].healthy  # the session's reused emulators stay up
