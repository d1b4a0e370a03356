"""`surgesim demo` never uses emulators it did not start: where something already answers
on the emulators' default ports, it starts its own on free ports, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _listen(port: int) -> socket.socket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None  # someone else's server is there already: just as good for this test
    s.listen()
    return s


def test_demo_uses_its_own_emulators_and_stops_them(tmp_path: Path) -> None:
    squatters = [_listen(p) for p in (8085, 8086, 8080)]
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    try:
        out = subprocess.run([sys.executable, "-m", "surgesim.cli", "demo", "--scenario",
                              str(ROOT / "scenarios" / "mmc_05.yaml"), "--out", str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=600, cwd=tmp_path,
                             env={**os.environ, "TMPDIR": str(private_tmp)})
    finally:
        for s in squatters:
            if s is not None:
                s.close()
    text = out.stdout + out.stderr
    assert "reusing" not in text, text
    assert "provisioned mmc" in text, text
    assert "emulators stopped" in text, text
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert f"verdict: {summary['verdict'].upper()}" in out.stdout
    assert "report: file://" in out.stdout
    assert out.returncode == (0 if summary["verdict"] == "pass" else 1)
    assert "8085" not in text and "8086" not in text
    assert not list(private_tmp.glob("surgesim-demo-*")), "the demo's private state directory was left behind"
