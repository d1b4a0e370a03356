"""The per-message queue against queueing theory: M/M/c mean wait and P(wait) within 2%
of Erlang C. Arrivals and exponential service times come from a fixed seed; the queue
is the simulator's own per-message discipline (ServiceNode._exact)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from surgesim.schema import load_experiment
from surgesim.sim.engine import Engine

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
C = 4
MU = 10.0  # service rate per server (100 ms mean, as in scenarios/systems/mmc.yaml)


def erlang_c(c: int, offered: float) -> float:
    """P(an arrival waits) in M/M/c with offered load a = lambda/mu."""
    rho = offered / c
    top = offered**c / math.factorial(c) / (1 - rho)
    return top / (sum(offered**k / math.factorial(k) for k in range(c)) + top)


def run_mmc(rho: float, n: int, seed: int) -> tuple[float, float]:
    exp = load_experiment(SCENARIOS / "mmc_08.yaml")
    node = Engine(exp).nodes["server"]
    rng = np.random.default_rng(seed)
    lam = rho * C * MU
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    service = rng.exponential(1 / MU, n)
    node.heap = None
    node.U, node.tU = 0.0, 0.0
    start = node._exact(arrivals, service, np.zeros(n, dtype=bool), math.inf, C, 0.0, float(arrivals[-1]))
    wait = (start - arrivals)[n // 20:]  # drop the warm-up from an empty system
    return float(wait.mean()), float((wait > 0).mean())


@pytest.mark.parametrize("rho,n", [(0.5, 400_000), (0.8, 1_000_000), (0.95, 4_000_000)])
def test_mmc_matches_erlang_c(rho: float, n: int) -> None:
    mean_wait, p_wait = run_mmc(rho, n, seed=20240601)
    offered = rho * C
    pw = erlang_c(C, offered)
    wq = pw / (C * MU - rho * C * MU)
    assert p_wait == pytest.approx(pw, rel=0.02)
    assert mean_wait == pytest.approx(wq, rel=0.02)


def test_mmc_scenario_runs_through_the_engine() -> None:
    """The same queue end to end: a G/D/4 run at utilisation 0.8 waits more than at 0.5."""
    waits = {}
    for name in ("mmc_05", "mmc_08"):
        exp = load_experiment(SCENARIOS / f"{name}.yaml")
        sc = exp.scenario.model_copy(update={"duration": 600.0})
        from dataclasses import replace

        eng = Engine(replace(exp, scenario=sc), exact=True).run()
        h = eng.metrics.totals["latency/server.work"]
        waits[name] = h.mean
        assert h.min >= 0.1 - 1e-9  # the handler alone takes 100 ms
    assert waits["mmc_08"] > waits["mmc_05"] > 0.1
