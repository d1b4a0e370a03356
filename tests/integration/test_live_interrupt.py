"""Ctrl-C on `surgesim live` with Locust as the load generator: Locust headless runs in a
session (process group) of its own, which a terminal's SIGINT never reaches, so the harness
must kill that group itself. The run is a shortened ci_spike with `live.locust: true`
(tests/integration/scenarios/ci_spike_locust.yaml), interrupted once Locust's requests
reach the command front; afterwards no process of any process group the run created may
be left. Checked by process group and pid (psutil, sampled while it ran), not by name, so
other people's Locust or emulators on the machine do not matter. About 40-60 s wall."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "scenarios" / "ci_spike_locust.yaml"
STARTUP_TIMEOUT = 75  # start-up (services, bridges) + Locust's first requests; the whole test stays < 90 s


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


class Tree:
    """Every descendant of one process, with its process group, as seen while it ran."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, tuple[psutil.Process, int | None, str]] = {}

    def sample(self) -> None:
        try:
            kids = psutil.Process(self.root).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for p in kids:
            if p.pid in self.seen:
                continue
            try:
                self.seen[p.pid] = (p, _pgid(p.pid), " ".join(p.cmdline())[:200])
            except psutil.Error:
                pass

    def groups(self) -> set[int]:
        return {g for _, g, _ in self.seen.values() if g is not None} | {self.root}

    def left(self) -> list[str]:
        """Live members of any group the run created, and any sampled pid still running."""
        out = []
        groups = self.groups()
        for p in psutil.process_iter():
            try:
                if _pgid(p.pid) in groups and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(f"{p.pid} (pgid {_pgid(p.pid)}) {' '.join(p.cmdline())[:160]}")
            except psutil.Error:
                pass
        for pid, (p, _, cmd) in self.seen.items():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and not any(s.startswith(f"{pid} ") for s in out):
                    out.append(f"{pid} {cmd}")
            except psutil.Error:
                pass
        return out

    def kill_all(self) -> None:
        for g in self.groups():
            try:
                os.killpg(g, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_ctrl_c_with_locust_leaves_no_process(gcp, tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "run.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "live", str(SCENARIO), "--out", str(out),
                                 "--state-dir", str(gcp.state_dir)], stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "COLUMNS": "200"})
    tree = Tree(proc.pid)
    text = lambda: log.read_text(errors="replace")  # noqa: E731
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            tree.sample()
            locust = [pid for pid, (_, _, cmd) in tree.seen.items() if "-m locust" in cmd]
            sent = [int(n) for n in re.findall(r"wall +[\d.]+s .* requests (\d+)", text())]
            if locust and sent and max(sent) > 0:
                break  # Locust runs and its requests reach the command front
            assert proc.poll() is None, f"surgesim live ended early ({proc.returncode}):\n{text()[-3000:]}"
            assert time.monotonic() < deadline, f"Locust traffic did not start within {STARTUP_TIMEOUT}s:\n{text()[-3000:]}"
            time.sleep(0.3)
        (locust_pid,) = locust
        locust_group = tree.seen[locust_pid][1]
        assert locust_group == locust_pid != _pgid(proc.pid)  # its own process group, not the harness's
        tree.sample()
        proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends to the harness's group
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        left = tree.left()
        tree.kill_all()
    assert rc == 130, text()[-3000:]
    assert re.search(r"^interrupted at scenario \d+ s; everything stopped", text(), re.M), text()[-2000:]
    cmds = [cmd for _, _, cmd in tree.seen.values()]
    assert any("devserver" in c or "uvicorn" in c or "surgesim.services" in c for c in cmds), cmds  # services seen
    assert len(tree.groups()) >= 5, cmds
    assert not left, f"left running after Ctrl-C: {left}"
    assert gcp.refresh().emulators["pubsub"].healthy  # the session's emulators, reused by the run, stay up


def test_two_quick_sigints_stop_every_emulator_the_run_started_and_leave_a_partial_report(tmp_path):
    """Issue 13: two quick Ctrl-Cs printed "everything stopped" while the emulators the run
    had started kept running. The run starts its own emulators here (recorded in the state
    directory, dead, so it restarts them on the same ports and owns them); two SIGINTs 0.1 s
    apart; afterwards no emulator process of that state directory runs and its ports are
    closed. Issue 20: the interrupted run leaves a partial summary that `surgesim report`
    renders "interrupted at ...". About 40-60 s wall."""
    import json

    from tests.integration.live_support import LiveRun, own_stack, stack_left

    state = tmp_path / "state"
    stack, ports = own_stack(state)
    for st in stack.emulators.values():  # dead but recorded: the run restarts them as its own
        os.killpg(st.pgid, signal.SIGKILL)
    time.sleep(0.5)
    run = LiveRun(HERE / "scenarios" / "honest" / "watchdog.yaml", tmp_path / "run", state, tmp_path / "run.log")
    try:
        run.wait_for("emulator (pid", 30)
        run.wait_for("requests", 120)
        time.sleep(2)
        run.proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
        run.proc.send_signal(signal.SIGINT)  # hurries the stop, never abandons it
        rc = run.wait(60)
    finally:
        run.kill()
        left = stack_left(state, ports)
        stack.down()
    text = run.text()
    assert rc == 130, text[-3000:]
    assert "restarting" in text  # the run started these emulators itself
    assert not left, f"left running after two Ctrl-Cs: {left}\n{text[-2000:]}"
    (line,) = [ln for ln in text.splitlines() if ln.startswith("interrupted at scenario")]
    assert line.endswith(f"everything stopped; partial run directory: {tmp_path / 'run'}"), line
    assert "Traceback" not in text, text[-3000:]

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["interrupted_by"] == "signal"
    assert summary["interrupted_at_s"] > 2 and summary["verdict"] == "interrupted"
    assert summary["totals"]["services"]["api"]["requests"] > 0  # what was measured until the signal
    assert summary["totals"]["subscriptions"]["pings-sub"]["published"] > 0
    report = subprocess.run([sys.executable, "-m", "surgesim.cli", "report", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "interrupted at scenario" in report.stdout and "INTERRUPTED" in report.stdout, report.stdout
    assert "INTERRUPTED at 00:00 (scenario " in (tmp_path / "run" / "report.html").read_text()
