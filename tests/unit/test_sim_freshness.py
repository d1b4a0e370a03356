"""Live-map freshness (`freshness.LiveMap`): the age of the newest position the map shows
per vehicle when looked at. Vehicles ping in turn every 5 s; checked against closed forms
for a listener and a polling reader, with the baseline's 10 s debounce and with one under
the ping interval (every ping written, the reference's "debounced, 2-3 s")."""

from __future__ import annotations

from dataclasses import replace

import pytest

from surgesim.sim.engine import Engine
from tests.unit.test_sim_engine import trimmed

COMMANDS = ("create_shipment", "assign_driver", "out_for_delivery", "mark_delivered", "dispatch")


def freshness(plan: str | None = None, **update) -> dict:
    exp = trimmed("telemetry_surge.yaml", duration=300, drop=COMMANDS, plan=plan)
    if update:
        exp = replace(exp, plan=exp.plan.model_copy(update=update))
    eng = Engine(exp).run()
    return eng.freshness_summaries()["LiveMap"]


def test_every_ping_written_and_listened_to_is_2_to_3_s_old() -> None:
    # debounce 2 s < the 5 s ping interval: every ping is written; a look finds the last
    # ping uniformly 0-5 s old (plus ms of pipeline): p50 2.5 s, p99 4.95 s
    f = freshness(debounce={"live-map": 2.0})
    assert f["p50"] == pytest.approx(2.5, rel=0.10)
    assert f["p99"] == pytest.approx(4.95, rel=0.05)
    assert f["max"] < 5.5
    assert f["count"] > 8200 * 100  # every vehicle, every 2 s step


def test_polling_every_20_s_sees_positions_10_to_30_s_old() -> None:
    # the same writes read by a 20 s poll: U(0,5) + U(0,20); median 12.5 s, and
    # P(age > x) = (25 - x)^2 / 200 above 20 s, so p99 = 24 s
    f = freshness(debounce={"live-map": 2.0}, read_every={"LiveMap": 20.0})
    assert f["p50"] == pytest.approx(12.5, rel=0.10)
    assert f["p99"] == pytest.approx(24.0, rel=0.05)


def test_baseline_debounce_and_the_shipped_polling_plan() -> None:
    # baseline: a vehicle is written at the first ping 10 s after its last write, so 10 or
    # 15 s apart; a look finds a position between 0 and 15 s old, mean 5-7.5 s
    base = freshness()
    assert 5.0 <= base["mean"] <= 7.5
    assert base["max"] < 15.5
    poll = freshness("livemap_polling.yaml")
    # the 20 s poll adds 10 s on average and stretches the tail towards 35 s
    assert poll["mean"] == pytest.approx(base["mean"] + 10.0, rel=0.08)
    assert 25.0 < poll["p99"] < 35.5


def test_freshness_in_the_slo_syntax_summary_and_validation(tmp_path) -> None:
    import json

    from surgesim.schema import Slo
    from surgesim.schema.loading import scenario_problems
    from surgesim.sim.output import write_run

    exp = trimmed("telemetry_surge.yaml", duration=120, drop=COMMANDS)
    exp = replace(exp, plan=exp.plan.model_copy(update={"debounce": {"live-map": 2.0}}))
    slos = [Slo.model_validate("p99(freshness.LiveMap) < 6s"), Slo.model_validate("p50(freshness.LiveMap) > 4s")]
    exp = replace(exp, scenario=exp.scenario.model_copy(update={"slos": slos}))
    write_run(Engine(exp).run(), tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["freshness"]["LiveMap"]["p50"] == pytest.approx(2.5, rel=0.15)
    got = {s["text"]: s for s in summary["slos"]}
    assert got["p99(freshness.LiveMap) < 6s"]["holds"] is True
    assert got["p50(freshness.LiveMap) > 4s"]["holds"] is False  # the SLO can fail
    sc = exp.scenario.model_copy(update={"slos": [Slo.model_validate("p99(freshness.parcels) < 6s")]})
    problems = [msg for _, msg in scenario_problems(sc, exp.system, exp.plan)]
    assert any("freshness.parcels: no such Firestore collection with freshness: true" in p for p in problems)
