"""`surgesim optimize` on an M/M/c case where the optimum is computable by hand: Poisson
arrivals at 32/s, exponential 100 ms service, the SLO mean wait < 50 ms. Erlang C gives
the smallest c that meets it; the search over c = 3..7 fixed instances must pick it (the
cost grows with c), in parallel."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from click.testing import CliRunner

from surgesim.cli import cli

ROOT = Path(__file__).resolve().parents[2]
LAM, MU, SLO_WAIT = 32.0, 10.0, 0.050


def erlang_c_wait(c: int, lam: float, mu: float) -> float:
    a = lam / mu
    if a >= c:
        return math.inf
    top = a ** c / math.factorial(c) * c / (c - a)
    p_wait = top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)
    return p_wait / (c * mu - lam)


def test_optimize_finds_the_erlang_c_optimum_in_parallel(tmp_path: Path) -> None:
    expected = min(c for c in range(1, 20) if erlang_c_wait(c, LAM, MU) < SLO_WAIT)
    assert expected == 5 and erlang_c_wait(4, LAM, MU) > SLO_WAIT  # the case is a real choice
    (tmp_path / "systems").mkdir()
    (tmp_path / "plans").mkdir()
    (tmp_path / "systems" / "mmc_exp.yaml").write_text((ROOT / "scenarios" / "systems" / "mmc_exp.yaml").read_text())
    (tmp_path / "plans" / "mmc.yaml").write_text((ROOT / "scenarios" / "plans" / "mmc.yaml").read_text())
    sc = yaml.safe_load((ROOT / "scenarios" / "mmc_exp_08.yaml").read_text())
    sc.update(duration="20m", slos=["max(rejected.server) == 0", "mean(wait.server) < 50ms"])
    (tmp_path / "sc.yaml").write_text(yaml.safe_dump(sc))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"services": {"server": {"instances": [3, 4, 5, 6, 7]}}}))
    out = tmp_path / "opt"
    res = CliRunner().invoke(cli, ["optimize", str(tmp_path / "sc.yaml"), "--space", str(tmp_path / "space.yaml"),
                                   "--workers", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "5 plans run on 2 processes" in res.output
    data = json.loads((out / "optimize.json").read_text())
    by_c = {r["settings"]["services.server.instances"]: r for r in data["rows"]}
    assert [c for c, r in sorted(by_c.items()) if r["verdict"] == "pass"] == [5, 6, 7]
    assert data["best"]["settings"] == {"services.server.instances": expected}
    costs = [by_c[c]["cost_per_day"] for c in sorted(by_c)]
    assert costs == sorted(costs) and costs[0] < costs[-1]
    best = yaml.safe_load((out / "best-plan.yaml").read_text())
    assert best["services"]["server"]["min_instances"] == best["services"]["server"]["max_instances"] == 5
    assert 0 < data["best"]["margin"] < 1
    # the Pareto table is of passing plans only, cheapest first, each faster than every cheaper one
    pareto = data["pareto"]
    assert pareto[0]["settings"] == data["best"]["settings"] and all(r["verdict"] == "pass" for r in pareto)
    assert [r["p99"] for r in pareto] == sorted((r["p99"] for r in pareto), reverse=True)
    assert len({r["p99"] for r in pareto}) == len(pareto)
    assert "3 of 5 pass every SLO and check" in res.output


def test_space_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text("services: {server: {instances: 4}}\n")
    res = CliRunner().invoke(cli, ["optimize", str(ROOT / "scenarios" / "mmc_exp_08.yaml"), "--space",
                                   str(tmp_path / "space.yaml"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "services.server.instances: a non-empty list of values, got 4" in res.output


def test_the_shipped_dispatch_wave_space_has_fifty_distinct_valid_plans() -> None:
    from surgesim.optimize import candidates
    from surgesim.schema import load_experiment

    exp = load_experiment(ROOT / "scenarios" / "dispatch_wave.yaml")
    space = yaml.safe_load((ROOT / "scenarios" / "spaces" / "dispatch_wave.space.yaml").read_text())
    cands, invalid = candidates(exp.plan, space)
    assert len(cands) >= 50 and invalid == 0
    dumps = {json.dumps(p.model_dump(mode="json"), sort_keys=True) for _, p in cands}
    assert len(dumps) == len(cands)  # every point is a different plan
    # the knobs land where the engine reads them, on top of the scenario's plan
    settings, plan = next((s, p) for s, p in cands if s["services.command.concurrency"] == 10
                          and s["services.billing.max_instances"] == 1 and s["services.live-map.min_instances"] == 1)
    assert plan.service("command").concurrency == 10 and plan.service("billing").max_instances == 1
    assert plan.service("live-map").min_instances == 1 and plan.service("live-map").max_instances == 20
    assert plan.service("notification").max_instances == exp.plan.service("notification").max_instances


def test_dask_without_the_extra_names_it(monkeypatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    (tmp_path / "space.yaml").write_text("services: {server: {instances: [4]}}\n")
    res = CliRunner().invoke(cli, ["optimize", str(ROOT / "scenarios" / "mmc_exp_08.yaml"), "--space",
                                   str(tmp_path / "space.yaml"), "--dask", "tcp://127.0.0.1:1", "--out",
                                   str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "pip install 'surgesim[dask]'" in res.output
