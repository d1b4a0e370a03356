"""`surgesim live` options refused before anything starts (exit 2, the option named)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from surgesim.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def test_workers_need_a_locust_scenario(tmp_path):
    r = CliRunner().invoke(cli, ["live", str(ROOT / "scenarios" / "ci_spike.yaml"), "--workers", "2",
                                  "--out", str(tmp_path / "run"), "--state-dir", str(tmp_path / "state")])
    assert r.exit_code == 2, r.output
    assert "--workers 2" in r.output and "live.locust: false" in r.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "state").exists()


def test_metrics_port_out_of_range_is_refused(tmp_path):
    r = CliRunner().invoke(cli, ["live", str(ROOT / "scenarios" / "ci_spike.yaml"), "--metrics-port", "70000"])
    assert r.exit_code == 2 and "--metrics-port" in r.output
