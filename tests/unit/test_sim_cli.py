"""`surgesim sim` and `surgesim compare` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from surgesim.cli import cli

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def test_bad_input_exits_2_with_the_problem_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((SCENARIOS / "mmc_05.yaml").read_text().replace("duration: 1h", "duration: soon")
                   .replace("systems/", str(SCENARIOS / "systems") + "/").replace("plans/", str(SCENARIOS / "plans") + "/"))
    res = CliRunner().invoke(cli, ["sim", str(bad), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "bad.yaml:" in res.output and "duration" in res.output


def test_sim_writes_a_run_directory_and_exits_on_the_verdict(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["sim", str(SCENARIOS / "mmc_05.yaml"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    for name in ("summary.json", "meta.json", "timeseries.parquet", "histograms.parquet", "faults.json"):
        assert (tmp_path / "run" / name).is_file()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["verdict"] == "pass" and summary["mode"] == "sim"
    assert "run directory" in res.output


def test_compare_runs_each_plan(tmp_path: Path) -> None:
    plan = str(SCENARIOS / "plans" / "mmc.yaml")
    res = CliRunner().invoke(cli, ["compare", str(SCENARIOS / "mmc_05.yaml"), "--plan", plan, "--plan", plan,
                                   "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert len(data["runs"]) == 2 and data["rows"][0]["plan"] == "mmc"
    assert data["rows"][0] == data["rows"][1]  # same seed, same plan: same run
