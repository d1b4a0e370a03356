"""Helpers for the live-run tests: `surgesim live` as a user runs it (a subprocess in its
own process group, output to a log), and an emulator stack of a test's own, which a test
may kill or interrupt without touching the session's `gcp` stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class LiveRun:
    def __init__(self, scenario: Path, out: Path, state_dir: Path | str, log: Path, *extra: str) -> None:
        self.out, self.log = out, log
        env = {**os.environ, "COLUMNS": "200", "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        with open(log, "w") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "live", str(scenario), "--out", str(out),
                                          "--state-dir", str(state_dir), *extra], stdout=f, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env, cwd=REPO)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> float:
        """Wall time when `needle` appeared in the output (fails if the run ended first)."""
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"ended ({self.proc.returncode}) before {needle!r}:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout}s:\n{self.text()[-3000:]}"
            time.sleep(0.2)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"surgesim live still running after {timeout}s:\n{self.text()[-3000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(60)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def own_stack(state_dir: Path, names=("pubsub", "firestore")):
    """Emulators on free ports in a state directory of the test's own."""
    from surgesim.emulators import up
    from surgesim.emulators.process import free_port

    ports: dict[str, int] = {}
    for key in ("pubsub", "firestore", "firestore_events"):
        while (port := free_port()) in ports.values():
            pass
        ports[key] = port
    return up(list(names), ports=ports, project="honest-test", state_dir=state_dir), ports


def stack_left(state_dir: Path, ports: dict[str, int]) -> list[str]:
    """Emulator processes of that state directory still running, or their ports answering."""
    from surgesim.emulators.process import marked_processes, port_open

    left = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in marked_processes(state_dir)]
    return left + [f"port {p} answers" for p in ports.values() if port_open("127.0.0.1", p)]
