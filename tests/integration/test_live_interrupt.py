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
    assert "interrupted; everything stopped" in text()
    cmds = [cmd for _, _, cmd in tree.seen.values()]
    assert any("devserver" in c or "uvicorn" in c or "surgesim.services" in c for c in cmds), cmds  # services seen
    assert len(tree.groups()) >= 5, cmds
    assert not left, f"left running after Ctrl-C: {left}"
    assert gcp.refresh().emulators["pubsub"].healthy  # the session's emulators, reused by the run, stay up
