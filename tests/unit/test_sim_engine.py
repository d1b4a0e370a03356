"""Headline outcomes of the simulator, on shortened versions of the seed scenarios (the
full ones are exercised by bench/). Every run also checks conservation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from surgesim.rundir import load_run
from surgesim.schema import load_experiment
from surgesim.sim.engine import Engine
from surgesim.sim.output import write_run

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def trimmed(name: str, *, duration: float, shift: float = 0.0, drop: tuple[str, ...] = (), plan: str | None = None,
            step: float | None = None):
    """The scenario cut to `duration` seconds starting `shift` seconds later in the day;
    waves and faults move with it."""
    exp = load_experiment(SCENARIOS / name, SCENARIOS / "plans" / plan if plan else None)
    sc = exp.scenario
    traffic = sc.traffic.model_copy(update={
        "sources": [s for s in sc.traffic.sources if s.name not in drop],
        "waves": [w.model_copy(update={"at": w.at - shift, "rates": {k: v for k, v in w.rates.items() if k not in drop}})
                  for w in sc.traffic.waves if w.at - shift >= 0],
    })
    faults = [f.model_copy(update={"at": f.at - shift}) for f in sc.faults]
    update = {"duration": duration, "start_clock": (sc.start_clock + shift) % 86400, "traffic": traffic, "faults": faults}
    if step is not None:
        update["step"] = step
    return replace(exp, scenario=sc.model_copy(update=update))


def check_conservation(eng: Engine) -> dict:
    totals = eng.totals()
    cons = eng.conservation(totals)
    for name, row in cons["subscriptions"].items():
        assert row["balance"] == 0, (name, row)
        assert row["backlog_in_queues"] == row["backlog"], (name, row)
    assert cons["ok"]
    return totals


def test_same_seed_same_bytes_and_conservation(tmp_path: Path) -> None:
    exp = trimmed("dispatch_wave.yaml", duration=900, shift=80 * 60, drop=("gps",))
    outs, engines = [], []
    for i in range(2):
        eng = Engine(exp).run()
        check_conservation(eng)
        write_run(eng, tmp_path / f"r{i}")
        outs.append((tmp_path / f"r{i}" / "summary.json").read_bytes())
        engines.append(eng)
    assert outs[0] == outs[1]
    other = Engine(exp, seed=7).run()
    assert other.totals() != engines[0].totals()
    run = load_run(tmp_path / "r0")
    assert run.summary["conservation"]["ok"]
    assert run.histogram("latency/command").count > 0
    assert not run.series("backlog", "eta-sub").empty


def test_baseline_dispatch_wave_at_4x_keeps_command_p99_under_100ms() -> None:
    exp = trimmed("dispatch_wave_4x.yaml", duration=1500, shift=80 * 60, drop=("gps",))
    eng = Engine(exp).run()
    check_conservation(eng)
    lat, _ = eng.latency_summaries()
    h = eng.metrics.totals["latency/command.mark_delivered"]
    assert h.count > 4 * 900 * 400  # the wave ran at 4x
    assert lat["command.mark_delivered"]["p99"] < 0.100
    assert eng.totals()["services"]["command"]["rejected"] == 0


def test_monolith_inherits_the_sms_gateways_seconds() -> None:
    exp = trimmed("sms_degradation.yaml", duration=1200, shift=80 * 60, drop=("gps",), plan="monolith.yaml")
    eng = Engine(exp).run()
    check_conservation(eng)
    lat, _ = eng.latency_summaries()
    assert lat["command.mark_delivered"]["p99"] > 2.0
    base = Engine(trimmed("sms_degradation.yaml", duration=1200, shift=80 * 60, drop=("gps",))).run()
    assert base.latency_summaries()[0]["command.mark_delivered"]["p99"] < 0.100


def test_sms_degradation_backlogs_notification_only_and_drains() -> None:
    exp = trimmed("sms_degradation.yaml", duration=2400, shift=85 * 60, drop=("gps",), step=5.0)
    eng = Engine(exp).run()
    totals = check_conservation(eng)
    backlog = eng.metrics.gauges[("backlog", "notification-sub")]
    assert backlog.max() > 10_000
    assert backlog[-1] < 0.01 * backlog.max()
    _, lag = eng.latency_summaries()
    assert lag["notification-sub"]["p99"] > 60
    assert lag["eta-sub"]["p99"] < 1.0
    assert eng.metrics.gauges[("backlog", "eta-sub")].max() < 100
    assert lag["billing-sub"]["p99"] < 2.0
    assert totals["subscriptions"]["notification-sub"]["dead_lettered"] == 0


def test_bad_eta_deploy_dead_letters_after_five_attempts_and_replay_loses_nothing() -> None:
    exp = trimmed("bad_eta_deploy.yaml", duration=3600, shift=40 * 60)
    eng = Engine(exp).run()
    totals = check_conservation(eng)
    eta = totals["subscriptions"]["eta-sub"]
    assert eta["dead_lettered"] > 100
    assert eta["dead_letter_attempts"] == {"min": 5, "max": 5}
    assert eta["replayed"] > 0
    hold = totals["subscriptions"]["eta-dlq-hold"]
    assert hold["published"] == eta["dead_lettered"]
    assert hold["backlog"] == 0  # every dead letter was delivered again by the seek, and acked on the hold
    assert eta["backlog"] < 50  # and the replay drained


def _ack_counts(eng: Engine, sub: str) -> dict[tuple[float, int, int], int]:
    counts: dict[tuple[float, int, int], int] = {}
    for pub, key, attrs in eng.broker.subs[sub].ack_log:
        for item in zip(pub.tolist(), key.tolist(), attrs.tolist()):
            counts[item] = counts.get(item, 0) + 1
    return counts


def test_bad_deploy_replay_delivers_each_affected_message_exactly_once() -> None:
    """Issue 13: the fix used to seek AND re-publish the dead letters, so eta handled each of
    them twice and client-webhook got a duplicate of each. Count acks per message (publish
    time, key, attributes) against the same run without the fault. The fix lands 4 s into a
    5 s step, so attempts still meet the bad version after the seek (the stragglers path)."""
    exp = trimmed("bad_eta_deploy.yaml", duration=3600, shift=40 * 60 - 4)
    clean = replace(exp, scenario=exp.scenario.model_copy(update={"faults": []}))
    runs = {}
    for name, e in (("fault", exp), ("clean", clean)):
        eng = Engine(e)
        for sub in ("eta-sub", "client-webhook-sub"):
            eng.broker.subs[sub].ack_log = []
        runs[name] = eng.run()
        check_conservation(runs[name])
    fault, base = runs["fault"], runs["clean"]
    f = exp.scenario.faults[0]
    assigned = fault.attrs.intern({"eventType": "ParcelAssigned"})
    assert base.attrs.intern({"eventType": "ParcelAssigned"}) == assigned
    eta = fault.totals()["subscriptions"]["eta-sub"]
    assert eta["dead_lettered"] > 100 and eta["backlog"] == 0
    assert fault.totals()["subscriptions"]["eta-dlq-hold"]["backlog"] == 0

    acked, acked_base = _ack_counts(fault, "eta-sub"), _ack_counts(base, "eta-sub")
    affected = {m for m in acked_base if m[2] == assigned and f.at <= m[0] < f.at + f.duration}
    assert len(affected) > eta["dead_lettered"] * 0.9
    # The messages the bad version raised on: each handled exactly once in the end, as without the fault.
    assert {m: acked.get(m, 0) for m in affected} == {m: 1 for m in affected}
    # Every ParcelAssigned message of the run, in or out of the window: once.
    assigned_counts = [n for m, n in acked.items() if m[2] == assigned]
    assert max(assigned_counts) == 1 and len(assigned_counts) == sum(1 for m in acked_base if m[2] == assigned)
    # client-webhook shares the topic and was never at fault: the same calls as without it.
    webhook, webhook_base = _ack_counts(fault, "client-webhook-sub"), _ack_counts(base, "client-webhook-sub")
    assert max(webhook.values()) == 1
    assert sum(webhook.values()) == sum(webhook_base.values())


def test_debounce_cuts_livemap_writes_to_one_per_vehicle_per_interval() -> None:
    kept = ("gps",)
    base = trimmed("dispatch_wave.yaml", duration=120, step=2.0)
    base = replace(base, scenario=base.scenario.model_copy(update={"traffic": base.scenario.traffic.model_copy(update={
        "sources": [s for s in base.scenario.traffic.sources if s.name in kept], "waves": []})}))
    debounced = Engine(base).run()
    check_conservation(debounced)
    writes = debounced.stores.firestore["LiveMap"]["writes"]
    assert writes <= 8200 * (120 / 10 + 1)
    raw = Engine(trimmed("dispatch_wave.yaml", duration=120, step=2.0, plan="monolith.yaml")).run()
    raw_writes = raw.stores.firestore["LiveMap"]["writes"]
    assert raw_writes / 120 == pytest.approx(1640, rel=0.05)
    assert writes < 0.6 * raw_writes


def test_consumer_down_builds_a_backlog_that_drains() -> None:
    exp = trimmed("consumer_down.yaml", duration=3 * 3600)
    eng = Engine(exp).run()
    totals = check_conservation(eng)
    backlog = eng.metrics.gauges[("backlog", "notification-sub")]
    step = eng.step
    at_restart = backlog[int(90 * 60 / step) - 1]
    assert at_restart > 1000
    assert backlog[: int(30 * 60 / step)].max() < 100
    assert backlog[-1] < 50
    assert totals["subscriptions"]["notification-sub"]["dead_lettered"] == 0
    oldest = eng.metrics.gauges[("oldest_unacked", "notification-sub")]
    assert oldest[int(90 * 60 / step) - 1] > 3000


def test_dogfinder_viral_runs(tmp_path: Path) -> None:
    exp = load_experiment(SCENARIOS / "dogfinder_viral.yaml")
    eng = Engine(exp).run()
    totals = check_conservation(eng)
    assert totals["bigquery"]["dogfinder.sightings"]["rows"] > 0
    summary = write_run(eng, tmp_path / "dog")
    assert {s["text"] for s in summary["slos"]} == {s.text for s in exp.scenario.slos}
    assert (tmp_path / "dog" / "faults.json").exists()


def test_poison_messages_go_to_the_dlq_after_max_attempts() -> None:
    from surgesim.schema.scenario import Fault

    exp = trimmed("bad_eta_deploy.yaml", duration=1800)
    poison = Fault(kind="poison_message", at=60, topic="logistics.events", count=7,
                   attributes={"eventType": "ParcelAssigned", "poison": "true"})
    exp = replace(exp, scenario=exp.scenario.model_copy(update={"faults": [poison]}))
    eng = Engine(exp).run()
    totals = check_conservation(eng)
    assert totals["subscriptions"]["eta-sub"]["dead_lettered"] == 7
    assert totals["subscriptions"]["client-webhook-sub"]["dead_lettered"] == 7
    assert totals["subscriptions"]["billing-sub"]["filtered"] >= 7
    assert np.isclose(totals["subscriptions"]["eta-dlq-hold"]["backlog"], 7)
