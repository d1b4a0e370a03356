"""pytest plugin (registered through the `pytest11` entry point): run a scenario from a
test and assert on its results.

    def test_dispatch_wave_meets_slos(surgesim_run):
        run = surgesim_run("scenarios/dispatch_wave.yaml", plan="scenarios/plans/baseline.yaml")
        assert run.summary["verdict"] == "pass"
        assert run.summary["latency"]["command.mark_delivered"]["p99"] < 0.100

The fixture runs the `surgesim` command in a subprocess (exactly what CI would run) and
returns the run directory read back (`surgesim.rundir.Run`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from surgesim.rundir import Run, load_run


@pytest.fixture
def surgesim_run(tmp_path: Path) -> Callable[..., Run]:
    counter = iter(range(10**6))

    def run(scenario: str | Path, *, plan: str | Path | None = None, mode: str = "sim",
            seed: int | None = None, extra: list[str] | None = None, timeout: float = 900) -> Run:
        out = tmp_path / f"run-{next(counter)}"
        cmd = [sys.executable, "-m", "surgesim.cli", mode, str(scenario), "--out", str(out)]
        if plan is not None:
            cmd += ["--plan", str(plan)]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        cmd += extra or []
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode not in (0, 1) or not (out / "summary.json").exists():
            raise AssertionError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return load_run(out)

    return run
