"""4x Meridian's baseline: the baseline plan dead-letters billing and notification (the
APIs' quotas, not instances, are short), the survive_4x plan (4x quotas) passes. On the
scenario's wave, cut to 30 minutes around it (the full 3 h run: docs/simulator.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from surgesim.schema import load_experiment
from surgesim.schema.loading import SchemaError
from surgesim.sim.engine import Engine
from tests.unit.test_sim_engine import check_conservation, trimmed

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def run(plan: str | None) -> Engine:
    eng = Engine(trimmed("dispatch_wave_4x.yaml", duration=1800, shift=85 * 60, drop=("gps",), plan=plan)).run()
    check_conservation(eng)
    return eng


def test_baseline_plan_dead_letters_at_4x_for_the_apis_quotas() -> None:
    eng = run(None)
    t = eng.totals()
    assert t["subscriptions"]["billing-sub"]["dead_lettered"] > 100_000
    assert t["subscriptions"]["notification-sub"]["dead_lettered"] > 50_000
    # the cause: 429s from the APIs, while billing and notification never ran out of slots
    assert t["apis"]["billing-api"]["rate_limited"] > 1_000_000
    assert t["apis"]["sms-gateway"]["rate_limited"] > 1_000_000
    assert t["services"]["billing"]["rejected"] == 0
    assert t["services"]["notification"]["rejected"] == 0


def test_survive_4x_plan_passes_with_nothing_dead_lettered() -> None:
    eng = run("survive_4x.yaml")
    t = eng.totals()
    for name, sub in t["subscriptions"].items():
        assert sub["dead_lettered"] == 0, name
    assert t["apis"]["billing-api"]["rate_limited"] == 0
    assert t["apis"]["sms-gateway"]["rate_limited"] == 0
    # every ParcelDelivered of the wave was billed: 4 x 900/s for its 9 minutes (less half
    # of the 30 s ramp in and out), once: no retries to speak of
    assert 4 * 900 * 510 < t["apis"]["billing-api"]["calls"] < 4 * 900 * 540 * 1.05
    lat, lag = eng.latency_summaries()
    for sub in ("billing-sub", "notification-sub", "eta-sub", "pod-sub", "driver-scoring-sub", "client-webhook-sub"):
        assert lag[sub]["p99"] < 60, sub
    assert lat["command.mark_delivered"]["p99"] < 0.100


def test_plan_quotas_replace_the_systems_and_are_checked(tmp_path: Path) -> None:
    exp = load_experiment(SCENARIOS / "dispatch_wave_4x.yaml", SCENARIOS / "plans" / "survive_4x.yaml")
    assert exp.system.api("billing-api").rate_limit == 4000
    assert exp.system.api("billing-api").latency.p50 == pytest.approx(0.120)  # the rest is the system's
    base = load_experiment(SCENARIOS / "dispatch_wave_4x.yaml")
    assert base.system.api("billing-api").rate_limit == 2000
    bad = tmp_path / "plan.yaml"
    bad.write_text("name: p\napis:\n  biling-api: {rate_limit: 10/s}\n")
    with pytest.raises(SchemaError) as e:
        load_experiment(SCENARIOS / "dispatch_wave_4x.yaml", bad)
    assert "external API 'biling-api' is not in system 'meridian'" in str(e.value)
    assert "billing-api" in str(e.value)
