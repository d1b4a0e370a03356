"""`surgesim calibrate`: on a "live" run whose truth is known (the simulator run with a
plan that adds a known log-normal overhead to the route), the fit recovers that overhead
and the overlay's prediction meets the live run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from surgesim.calibrate import fit_overlay, load, median_error
from surgesim.cli import cli
from surgesim.commands.sim import simulate
from surgesim.schema import load_experiment

ROOT = Path(__file__).resolve().parents[2]
TRUTH = {"p50": 0.080, "p99": 0.200}  # the local stack's overhead the fit must find


def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "systems").mkdir()
    (tmp_path / "plans").mkdir()
    (tmp_path / "systems" / "mmc.yaml").write_text((ROOT / "scenarios" / "systems" / "mmc.yaml").read_text())
    plan = yaml.safe_load((ROOT / "scenarios" / "plans" / "mmc.yaml").read_text())
    (tmp_path / "plans" / "mmc.yaml").write_text(yaml.safe_dump(plan))
    truth = dict(plan, name="truth")
    truth["services"] = {"server": dict(plan["services"]["server"], routes=[
        {"name": "work", "path": "/work", "steps": [{"cpu": "100ms"}, {"sleep": TRUTH}]}])}
    (tmp_path / "plans" / "truth.yaml").write_text(yaml.safe_dump(truth))
    # light load (0.2 of the 4 slots with the overhead): the latency is the service time
    sc = yaml.safe_load((ROOT / "scenarios" / "mmc_08.yaml").read_text())
    sc.update(duration="20m", traffic={"sources": [{"name": "arrivals", "rate": "4/s",
                                                    "request": {"service": "server", "route": "work"}}]})
    (tmp_path / "sc.yaml").write_text(yaml.safe_dump(sc))
    return tmp_path / "sc.yaml", tmp_path / "plans" / "truth.yaml"


def test_fit_recovers_a_known_overhead(tmp_path: Path) -> None:
    scenario, truth = files(tmp_path)
    _, live_dir = simulate(scenario, truth, 5, tmp_path / "live", False, quiet=True)
    _, sim_dir = simulate(scenario, None, 6, tmp_path / "sim", False, quiet=True)
    sim, live = load(sim_dir), load(live_dir)
    before, n = median_error(sim, live)
    assert before > 0.5 and n >= 2  # the model without the overhead is far off
    fit = fit_overlay(load_experiment(scenario), sim, live)
    [route] = [f for f in fit.fitted if f["what"] == "route"]
    assert route["path"] == "server.work"
    assert route["p50"] == pytest.approx(TRUTH["p50"], rel=0.10)
    assert route["p99"] == pytest.approx(TRUTH["p99"], rel=0.15)
    overlay = tmp_path / "plans" / "calibrated.yaml"
    overlay.write_text(yaml.safe_dump(fit.plan))
    _, after_dir = simulate(scenario, overlay, 6, tmp_path / "after", False, quiet=True)
    after, _ = median_error(load(after_dir), live)
    assert after <= 0.10
    assert load_experiment(scenario, overlay).plan.service("server").max_instances == 4  # the rest of the plan kept


def test_calibrate_command_prints_before_and_after(tmp_path: Path) -> None:
    scenario, truth = files(tmp_path)
    _, live_dir = simulate(scenario, truth, 5, tmp_path / "live", False, quiet=True)
    res = CliRunner().invoke(cli, ["calibrate", str(scenario), str(live_dir), "--seed", "6"])
    assert res.exit_code == 0, res.output
    fitted = next(x for x in res.output.splitlines() if "server.work: sleep p50" in x)
    assert float(fitted.split("p50 ")[1].split(" ms")[0]) == pytest.approx(80, rel=0.10)
    line = next(x for x in res.output.splitlines() if x.startswith("median |relative error| before"))
    before = float(line.split("before: ")[1].split("%")[0])
    after = float(line.split("after: ")[1].split("%")[0])
    assert before > 50 and after <= 10
    assert (live_dir / "calibrated-plan.yaml").is_file()
