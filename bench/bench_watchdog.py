"""How fast a live run notices a dead emulator: `kill -9` of the Firestore, then the Pub/Sub
emulator's process group 3 s into tests/integration/scenarios/honest/watchdog.yaml, on
emulators of its own (free ports, a temporary state directory); prints the seconds from the
kill to the console line naming it and to the run's exit (docs/live.md quotes it).

    SURGESIM_HOME=$PWD/.surgesim-state .venv/bin/python bench/bench_watchdog.py
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.live_support import LiveRun, own_stack  # noqa: E402

SCENARIO = REPO / "tests" / "integration" / "scenarios" / "honest" / "watchdog.yaml"


def main() -> None:
    for emulator in ("firestore", "pubsub"):
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-watchdog-{emulator}-"))
        stack, _ = own_stack(tmp / "state")
        try:
            run = LiveRun(SCENARIO, tmp / "run", tmp / "state", tmp / "run.log")
            run.wait_for("requests", 120)
            time.sleep(3)
            os.killpg(stack.emulators[emulator].pgid, signal.SIGKILL)
            t0, said = time.monotonic(), None
            while run.proc.poll() is None:
                if said is None and "exited unexpectedly" in run.text():
                    said = time.monotonic() - t0
                time.sleep(0.05)
            print(f"{emulator}: exit {run.proc.returncode}, console line {said:.1f} s after the kill, "
                  f"run ended {time.monotonic() - t0:.1f} s after it")
        finally:
            stack.down()


if __name__ == "__main__":
    main()
