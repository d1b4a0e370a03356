"""What a live run puts on the scenario clock (docs/live.md, "Time in a live run"): Pub/Sub's
retry and push backoffs divided by time_scale, request-side times untouched; a held push
window starts nothing; live.slos replace the scenario's SLOs for the live verdict only."""

from __future__ import annotations

from pathlib import Path

import pytest

from surgesim.pubsub_push import PUSH_BACKOFF_MIN_S, PushWindow
from surgesim.live.runner import ScaledPushWindow, scaled_retry
from surgesim.schema import load_experiment

ROOT = Path(__file__).resolve().parents[2]


def test_retry_backoffs_are_divided_by_time_scale_and_nothing_else_changes():
    exp = load_experiment(ROOT / "scenarios" / "bad_eta_deploy.yaml")
    scaled = scaled_retry(exp.system, 60.0)
    before = {s.name: s for s in exp.system.subscriptions}
    for s in scaled.subscriptions:
        b = before[s.name]
        assert s.ack_deadline == b.ack_deadline and s.dead_letter == b.dead_letter and s.filter == b.filter
        if b.retry is None:
            assert s.retry is None
        else:
            assert s.retry.min_backoff == pytest.approx(b.retry.min_backoff / 60.0)
            assert s.retry.max_backoff == pytest.approx(b.retry.max_backoff / 60.0)
    eta = next(s for s in scaled.subscriptions if s.name == "eta-sub")
    assert eta.retry.min_backoff == pytest.approx(10.0 / 60.0)  # 10 s of scenario time
    assert next(s for s in exp.system.subscriptions if s.name == "eta-sub").retry.min_backoff == 10.0  # not mutated
    assert scaled_retry(exp.system, 1.0) is exp.system


def test_push_backoff_is_divided_but_the_window_behaves_as_pubsubs():
    plain, scaled = PushWindow(maximum=50), ScaledPushWindow(60.0, maximum=50)
    for _ in range(4):
        assert scaled.on_failure() == pytest.approx(plain.on_failure() / 60.0)
    assert scaled.limit == plain.limit == 1
    scaled.on_success(0.01)
    scaled.on_success(5.0)  # a slow request (real seconds, not scaled) does not grow it
    assert scaled.limit == 2
    assert ScaledPushWindow(60.0).on_failure() == pytest.approx(PUSH_BACKOFF_MIN_S / 60.0)


def test_a_held_window_starts_nothing_until_released():
    w = ScaledPushWindow(1.0, maximum=100)
    for _ in range(10):
        w.on_success(0.01)
    assert w.limit == 13
    w.held = True
    assert w.limit == 0
    w.held = False
    assert w.limit == 13  # what it had learnt is kept


def test_live_slos_are_their_own_and_the_scenarios_stay_for_sim():
    sc = load_experiment(ROOT / "scenarios" / "sms_degradation.yaml").scenario
    assert [s.text for s in sc.slos][0] == "p99(latency.command.mark_delivered) < 100ms"
    assert [s.text for s in sc.live.slos][0] == "p99(latency.command.mark_delivered) < 60s"
    assert load_experiment(ROOT / "scenarios" / "ci_spike.yaml").scenario.live.slos is None


def test_scale_overrides_out_of_range_are_bad_input_before_anything_starts(tmp_path):
    from click.testing import CliRunner

    from surgesim.cli import cli

    res = CliRunner().invoke(cli, ["live", str(ROOT / "scenarios" / "dispatch_wave.yaml"), "--rate-scale", "2",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert "--rate-scale" in res.output and "1e-06..1" in res.output
    assert not (tmp_path / "run").exists()
