"""The reference's monolith figure: "mark delivered" p99 4.6 s "when it waited on a 6 s SMS
gateway" (event-driven: 62 ms), on scenarios/sms_slowdown.yaml's day, where the gateway slows
from 200 ms to 6 s over half an hour (docs/simulator.md, "Relational store")."""

from __future__ import annotations

from dataclasses import replace

import pytest

from surgesim.sim.engine import Engine
from tests.unit.test_sim_engine import check_conservation, trimmed


def slowdown(window_min: float, *, ramp: bool = True, at_h: float = 14.0, seed: int | None = None,
             plan: str | None = "monolith.yaml") -> float:
    """mark_delivered's p99 over scenarios/sms_slowdown.yaml's day (gps dropped: the command
    path does not read it), its SMS slowdown given another window, start or shape."""
    exp = trimmed("sms_slowdown.yaml", duration=86400, drop=("gps",), plan=plan)
    sc = exp.scenario
    (f,) = sc.faults
    f = f.model_copy(update={"at": at_h * 3600, "duration": window_min * 60, "ramp": window_min * 60 if ramp else 0.0})
    update: dict = {"faults": [f]}
    if seed is not None:
        update["seed"] = seed
    eng = Engine(replace(exp, scenario=sc.model_copy(update=update))).run()
    check_conservation(eng)
    return float(eng.latency_summaries()[0]["command.mark_delivered"]["p99"])


def test_the_monolith_answers_mark_delivered_in_4_6_s_p99_on_the_day_the_sms_gateway_slows() -> None:
    """The reference: 4.6 s p99 "when it waited on a 6 s SMS gateway", 62 ms event-driven.
    scenarios/sms_slowdown.yaml as shipped (the gateway slowing from 200 ms to 6 s over 30
    minutes of an ordinary day): the monolith within 15% of 4.6 s, the event-driven plan
    under 100 ms on the same day (its SMS calls are notification's, off the request path)."""
    exp = trimmed("sms_slowdown.yaml", duration=86400, drop=("gps",), plan="monolith.yaml")
    assert exp.scenario.faults[0].ramp == 1800 and exp.scenario.traffic.waves == []
    assert slowdown(30) == pytest.approx(4.6, rel=0.15)
    # the event-driven plan over 13:00-15:00, the slowdown in the middle
    base = Engine(trimmed("sms_slowdown.yaml", duration=7200, shift=13 * 3600, drop=("gps",))).run()
    check_conservation(base)
    assert base.latency_summaries()[0]["command.mark_delivered"]["p99"] < 0.100
    assert base.totals()["apis"]["sms-gateway"]["calls"] > 0


def test_a_gradual_slowdown_makes_the_4_6_s_a_plateau_not_a_knife_edge() -> None:
    """A window from 25 to 45 minutes, or starting at 10:00 instead of 14:00, keeps the
    day's p99 within 15% of 4.6 s (bench/bench_monolith_sms.py prints the whole table,
    and the knife edge of a gateway that turns slow at once: docs/simulator.md)."""
    assert slowdown(25) == pytest.approx(4.6, rel=0.15)
    assert slowdown(45) == pytest.approx(4.6, rel=0.15)
    assert slowdown(30, at_h=10.0) == pytest.approx(4.6, rel=0.15)
