"""`surgesim up`: everything it starts listens where its table says, and SIGINT (Ctrl-C)
or SIGTERM stops all of it, leaving no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.integration

DOGFINDER = Path(__file__).resolve().parents[2] / "scenarios" / "systems" / "dogfinder.yaml"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_lists_what_listens_and_a_signal_stops_everything(gcp, tmp_path, sig):
    out = tmp_path / "up.out"
    with open(out, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "up", str(DOGFINDER), "--state-dir",
                                 str(gcp.state_dir), "--log-dir", str(tmp_path / "logs")],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "COLUMNS": "200"})
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops everything" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        text = out.read_text()
        children = proc_tree(proc.pid)
        assert len(children) >= 3  # app, matcher, the owner-notify fake (each with its own group)
        # the table names the app's front; it answers
        cells = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.count("│") >= 6]
        rows = {c[1]: c[2] for c in cells if c[0] in ("emulator", "fake", "service")}
        assert {"app", "matcher", "owner-notify"} <= set(rows), text
        assert httpx.get(rows["app"] + "/healthz", trust_env=False, timeout=10).status_code == 200
        assert rows["pubsub"] == gcp.endpoint("pubsub")
        proc.send_signal(sig)
        assert proc.wait(60) == 0, out.read_text()
    finally:
        if proc.poll() is None:  # a failed assertion: let the runner clean up, then make sure
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                for p in proc_tree_safe(children):
                    p.kill()
    left = [p for p in children if alive(p)]
    assert not left, f"left running: {[(p.pid, p.cmdline()) for p in left]}"
    assert gcp.refresh().emulators["pubsub"].healthy  # the session's reused emulators are not stopped


def proc_tree(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def proc_tree_safe(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if alive(p)]
