"""The default queue is the exact FCFS G/G/c where queues form: the vectorised no-wait
path and the per-message path give the same starts as `--exact` (bit for bit), the run
says which node went which way, and both land on queueing theory (Erlang C, exact M/D/c)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.unit.mmc_cases import mdc_theory, mmc_theory, write_case
from surgesim.schema import load_experiment
from surgesim.sim.engine import Engine


def node_of(tmp_path: Path):
    eng = Engine(load_experiment(write_case(tmp_path, c=4, rho=0.5, duration=60)))
    return eng.nodes["server"]


def test_vectorised_starts_equal_the_heap_recursion(tmp_path):
    """Random steps through the same node twice: changing slot counts, ties, zero handler
    times, bursts that make a queue stand and quiet stretches where it clears."""
    rng = np.random.default_rng(5)
    a_node, b_node = node_of(tmp_path / "a"), node_of(tmp_path / "b")
    b_node.eng.exact = True
    t0 = 0.0
    used = {"vectorised": 0, "per_message": 0}
    for _ in range(300):
        c = int(rng.choice([1, 2, 7, 40, 200]))
        n = int(rng.integers(1, 3000))
        burst = rng.random() < 0.3
        a = np.sort(t0 + rng.random(n) * (1.0 if burst else 10.0))
        if rng.random() < 0.2:
            a = np.round(a, 1)  # ties
        s = rng.exponential(0.05 if not burst else 0.5, n) * (rng.random(n) > 0.1)  # some zero
        if rng.random() < 0.05:
            s[:] = 0.0  # all zero: ties everywhere
        rej = np.zeros(n, bool)
        st_a = a_node._vectorised(a, s, rej, math.inf, c, t0, t0 + 10.0)
        st_b = b_node._exact(a, s, rej, math.inf, c, t0, t0 + 10.0)
        if c == 1:  # the Lindley cumulative sum: equal up to rounding
            np.testing.assert_allclose(st_a, st_b, rtol=0, atol=1e-9)
            np.testing.assert_allclose(a_node.heap, b_node.heap, rtol=0, atol=1e-9)
            a_node.heap = list(b_node.heap)
        else:
            np.testing.assert_array_equal(st_a, st_b)
            assert sorted(a_node.heap) == sorted(b_node.heap)
        t0 += 10.0
    used = a_node.qstats
    assert used["vectorised"] > 10_000 and used["per_message"] > 10_000, used


CASES = [  # (c, rho, service, step s): queues form in every one
    (1, 0.5, "exponential", 10.0),
    (4, 0.8, "exponential", 1.0),
    (7, 0.9, "constant", 4.0),
    (40, 0.97, "constant", 10.0),
    (40, 0.97, "exponential", 5.0),
]


@pytest.mark.parametrize("c,rho,service,step", CASES)
def test_default_engine_equals_exact_where_queues_form(tmp_path, c, rho, service, step):
    exp = load_experiment(write_case(tmp_path, c=c, rho=rho, service=service, step=step, duration=900, seed=3))
    fast = Engine(exp, exact_below=0).run()  # every step through the vectorised check
    ref = Engine(exp, exact=True).run()
    wf, wr = fast.wait_summaries()["server"], ref.wait_summaries()["server"]
    assert wr["pwait"] > 0.3  # a queue forms
    hf, hr = fast.metrics.totals["latency/server.work"], ref.metrics.totals["latency/server.work"]
    if c == 1:  # one slot: the Lindley cumulative sum, equal up to rounding
        assert wf == pytest.approx(wr, rel=1e-9)
        assert hf.count == hr.count and hf.total == pytest.approx(hr.total, rel=1e-9)
    else:
        assert wf == wr
        assert hf.count == hr.count and hf.total == hr.total and (hf.counts == hr.counts).all()
    q = fast.queue_stats()["server"]
    assert (q["per_message"] > 0 or c == 1) and q["waited"] > 0
    assert ref.queue_stats()["server"]["vectorised"] == 0


@pytest.mark.parametrize("c,rho,service,step,duration", [
    # M/M/4 at 0.8 is the CLI test below. Many-server queues at high utilisation need far
    # more arrivals for 2% (M/D/40 at 0.8: 1 M-arrival batches spread -3%..+2% around
    # theory), so they are checked against --exact above, where there is no sampling noise.
    (7, 0.9, "constant", 4.0, 6 * 3600),       # M/D/7: 1.4 M arrivals
    (1, 0.7, "constant", 1.0, 24 * 3600),      # M/D/1 (Pollaczek-Khinchine): 0.6 M arrivals
])
def test_engine_lands_on_queueing_theory(tmp_path, c, rho, service, step, duration):
    exp = load_experiment(write_case(tmp_path, c=c, rho=rho, service=service, step=step, duration=duration, seed=11))
    w = Engine(exp).run().wait_summaries()["server"]
    wq, pw = (mmc_theory if service == "exponential" else mdc_theory)(c, rho)
    assert w["pwait"] == pytest.approx(pw, rel=0.02)
    assert w["mean"] == pytest.approx(wq, rel=0.02)


def test_mdc_theory_matches_the_closed_forms():
    """M/D/1 has Pollaczek-Khinchine's mean wait; M/M/1 waits rho/(mu - lambda)."""
    for rho in (0.5, 0.9, 0.97):
        wq, pw = mdc_theory(1, rho, 0.1)
        assert wq == pytest.approx(rho * 0.1 / (2 * (1 - rho)), rel=1e-6)
        assert pw == pytest.approx(rho, rel=1e-6)
        wq, pw = mmc_theory(1, rho, 0.1)
        assert wq == pytest.approx(rho * 0.1 / (1 - rho)) and pw == pytest.approx(rho)


def erlang_c_here(c: int, lam: float, mu: float) -> tuple[float, float]:
    """Erlang C computed here from its definition (not the helper above): P(wait) and
    mean wait of M/M/c."""
    a = lam / mu
    rho = a / c
    top = a ** c / math.factorial(c) / (1 - rho)
    pw = top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)
    return pw, pw / (c * mu - lam)


def test_mmc_scenario_file_through_the_cli_lands_on_erlang_c(tmp_path):
    """scenarios/mmc_exp_08.yaml: the exponential handler time is written in its system
    file; `surgesim sim` reports the wait and P(wait) in summary.json and judges the SLOs
    on them (`mean(wait.server)`, `mean(pwait.server)`)."""
    import json

    from click.testing import CliRunner

    from surgesim.cli import cli

    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "mmc_exp_08.yaml"
    res = CliRunner().invoke(cli, ["sim", str(scenario), "--out", str(tmp_path / "run"), "--no-report"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    pw, wq = erlang_c_here(4, 32.0, 10.0)
    w = summary["wait"]["server"]
    assert w["count"] > 1_000_000
    assert w["pwait"] == pytest.approx(pw, rel=0.02)
    assert w["mean"] == pytest.approx(wq, rel=0.02)
    assert summary["wait"]["server.work"] == w  # the one route is the whole service
    # engine.nodes counts every wait > 0; pwait the waits past the histograms' 1 us floor
    assert summary["engine"]["nodes"]["server"]["waited"] == pytest.approx(w["count"] * w["pwait"], rel=1e-4)
    slos = {s["text"]: s for s in summary["slos"]}
    assert slos["mean(pwait.server) < 0.62"]["observed"] == pytest.approx(w["pwait"], rel=1e-6)
    assert slos["mean(wait.server) < 80ms"]["observed"] == pytest.approx(wq, rel=0.03)  # from the histogram buckets
