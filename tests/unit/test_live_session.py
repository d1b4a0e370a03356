"""The live run's bookkeeping without processes: the fault injector's start/end/restore
against a recording runner, the conservation balance, and the lag recorder's windows."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from surgesim.live import fault_kinds, session
from surgesim.live.faults import FaultInjector
from surgesim.schema import Fault


class RecordingRunner:
    """What FaultInjector calls on a SystemRunner, recorded; the fake's behaviour kept in a dict."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.behaviour = {"latency_p50_ms": 200.0, "latency_p99_ms": None, "error_rate": 0.0, "outage": False}
        self.stack = SimpleNamespace(endpoint=lambda name: "127.0.0.1:9", emulators={})
        self.system = SimpleNamespace(project="p", subscriptions=[])
        self.procs = {"eta": SimpleNamespace(stopped_by_fault=False)}
        self.fake_procs = {"sms-gateway": None, "billing-api": None}
        self.skipped = {}

    def fake_admin(self, api, method, path, json=None):
        self.calls.append(("admin", api, method, json))
        if method == "PUT":
            self.behaviour.update(json)
        return httpx.Response(200, json=dict(self.behaviour), request=httpx.Request(method, "http://x" + path))

    def stop_service(self, name):
        self.calls.append(("stop", name))

    def start_service(self, name, extra_env=None, drop_env=()):
        self.calls.append(("start", name, dict(extra_env or {}), tuple(drop_env)))

    def roll_out(self, name, extra_env=None, drop_env=(), before_stop=None):
        self.calls.append(("roll_out", name, dict(extra_env or {}), tuple(drop_env)))
        if before_stop is not None:
            before_stop(SimpleNamespace(url=self.old_revision_url))

    def hold_push(self, name, held):
        self.calls.append(("hold", name, held))
        return []

    old_revision_url = "http://127.0.0.1:9"  # nothing listens: the counters are unreadable


def injector(*faults: Fault) -> tuple[FaultInjector, RecordingRunner]:
    r = RecordingRunner()
    return FaultInjector(r, list(faults), time_scale=10.0, say=lambda m: None), r


def test_dependency_latency_is_applied_on_time_and_the_old_behaviour_restored():
    f = Fault(kind="dependency_latency", at=60, duration=120, target="sms-gateway", latency={"p50": "2s"})
    inj, r = injector(f)
    inj.tick(59.0)
    assert r.calls == []
    inj.tick(60.0)
    assert r.behaviour["latency_p50_ms"] == 2000.0 and r.behaviour["latency_p99_ms"] == 2000.0
    inj.tick(179.0)
    assert len(inj.active) == 1
    inj.tick(180.0)
    # p99 had no value before: restored to the old p50, not left at 2 s
    assert r.behaviour["latency_p50_ms"] == 200.0 and r.behaviour["latency_p99_ms"] == 200.0
    (ev,) = inj.events
    assert (ev["kind"], ev["target"], ev["start_s"], ev["end_s"]) == ("dependency_latency", "sms-gateway", 60.0, 180.0)
    assert ev["details"]["latency"] == {"p50": 2.0, "mean": 2.0}  # the figures set, not every field's None


def test_a_latency_ramp_moves_the_fakes_p50_and_p99_linearly_then_holds_and_restores(monkeypatch):
    monkeypatch.setattr(fault_kinds, "RAMP_EVERY_S", 0.0)
    f = Fault(kind="dependency_latency", at=60, duration=120, ramp=60, target="sms-gateway",
              latency={"p50": "6s", "p99": "9s"})
    inj, r = injector(f)
    inj.tick(60.0)  # the start: where the fake was (200 ms, p99 restored to its p50)
    assert r.behaviour["latency_p50_ms"] == pytest.approx(200.0) and r.behaviour["latency_p99_ms"] == pytest.approx(200.0)
    inj.tick(75.0)
    assert r.behaviour["latency_p50_ms"] == pytest.approx(200 + 0.25 * 5800)
    assert r.behaviour["latency_p99_ms"] == pytest.approx(200 + 0.25 * 8800)
    inj.tick(120.0)
    assert r.behaviour["latency_p50_ms"] == pytest.approx(6000.0) and r.behaviour["latency_p99_ms"] == pytest.approx(9000.0)
    puts = sum(1 for c in r.calls if c[2] == "PUT")
    inj.tick(150.0)  # at the fault's value: no more updates
    assert sum(1 for c in r.calls if c[2] == "PUT") == puts
    inj.tick(180.0)
    assert r.behaviour["latency_p50_ms"] == 200.0 and r.behaviour["latency_p99_ms"] == 200.0
    (ev,) = inj.events
    assert ev["details"]["ramp_s"] == 60.0 and ev["details"]["ramp_updates"] == 2


def test_a_ramp_updates_the_fake_at_most_every_half_wall_second():
    f = Fault(kind="dependency_latency", at=0, duration=600, ramp=600, target="sms-gateway", latency={"p50": "6s"})
    inj, r = injector(f)
    for t in range(0, 100, 5):  # 20 ticks within a fraction of a wall second
        inj.tick(float(t))
    assert sum(1 for c in r.calls if c[2] == "PUT") <= 3


def test_consumer_down_stops_then_restarts_and_a_fault_without_end_lasts_until_finish():
    inj, r = injector(Fault(kind="consumer_down", at=10, duration=20, target="eta"),
                      Fault(kind="dependency_outage", at=15, target="billing-api"))
    inj.tick(16.0)
    assert r.behaviour["outage"] is True
    # its pushes are held before it stops (a down consumer takes no messages), resumed after it starts
    assert [c for c in r.calls if c[0] != "admin"] == [("hold", "eta", True), ("stop", "eta")]
    assert r.procs["eta"].stopped_by_fault  # its exit is expected: the watchdog and the checks say so
    inj.tick(30.0)
    assert not r.procs["eta"].stopped_by_fault
    assert [c for c in r.calls if c[0] != "admin"][2:] == [("start", "eta", {}, ()), ("hold", "eta", False)]
    inj.finish(99.0)
    assert r.behaviour["outage"] is False
    assert [(e["kind"], e["start_s"], e["end_s"]) for e in inj.events] == [("consumer_down", 10.0, 30.0),
                                                                          ("dependency_outage", 15.0, 99.0)]


def test_faults_that_cannot_be_injected_are_named_before_the_run():
    inj, r = injector(Fault(kind="emulator_restart", at=5, target="firestore"),
                      Fault(kind="emulator_restart", at=6),
                      Fault(kind="dependency_errors", at=6, duration=10, target="nope", error_rate=0.5),
                      Fault(kind="consumer_down", at=7, target="ghost"),
                      Fault(kind="dependency_outage", at=8, target="sms-gateway"),
                      Fault(kind="bad_deploy", at=9, target="eta", matching='attributes.x = "y"'))
    problems = inj.unsupported()
    assert len(problems) == 4, problems
    assert problems[0].startswith("emulator_restart of firestore at 5s: only the Pub/Sub emulator")
    # the Pub/Sub emulator of this run was not started by surgesim: no process group to freeze
    assert problems[1].startswith("emulator_restart at 6s:") and "not started by surgesim" in problems[1]
    assert "'nope' is not a fake run here" in problems[2]
    assert problems[3].startswith("consumer_down of ghost at 7s:")
    r.stack.emulators["pubsub"] = SimpleNamespace(owned=True, pgid=4321)
    assert len(inj.unsupported()) == 3


def test_unsupported_faults_are_rejected_from_the_files_alone():
    system = SimpleNamespace(external_apis=[SimpleNamespace(name="sms", fake="sms", url=None),
                                            SimpleNamespace(name="real", fake=None, url="http://x")],
                             services=[SimpleNamespace(name="eta", app="m:app", command=None),
                                       SimpleNamespace(name="saga", app=None, command=None)])
    problems = session.unsupported_faults([
        Fault(kind="dependency_outage", at=1, target="sms"), Fault(kind="dependency_outage", at=2, target="real"),
        Fault(kind="consumer_down", at=3, target="eta"), Fault(kind="consumer_down", at=4, target="saga"),
        Fault(kind="emulator_restart", at=5, target="firestore"), Fault(kind="emulator_restart", at=6)], system)
    assert [p.split(":")[0] for p in problems] == ["dependency_outage of real at 2s", "consumer_down of saga at 4s",
                                                   "emulator_restart of firestore at 5s"]


def test_failing_faults_are_recorded_and_the_run_goes_on():
    inj, r = injector(Fault(kind="emulator_restart", at=5, target="firestore"),
                      Fault(kind="dependency_errors", at=6, duration=10, target="nope", error_rate=0.5))

    def boom(*a, **k):
        raise KeyError("nope is not a fake run here")

    r.fake_admin = boom
    inj.tick(7.0)
    assert inj.active == []
    assert inj.events[0]["details"]["unsupported"] is True
    assert "KeyError" in inj.events[1]["details"]["failed"]


def test_bad_deploy_rolls_out_with_the_pattern_and_back_without():
    inj, r = injector(Fault(kind="bad_deploy", at=0, duration=30, target="eta", matching='attributes.x = "y"'))
    inj.tick(0.0)
    inj.tick(30.0)
    assert r.calls == [("roll_out", "eta", {"BAD_PATTERN": 'attributes.x = "y"'}, ()),
                       ("roll_out", "eta", {}, ("BAD_PATTERN",))]
    # the bad revision's counters are read when the fix has taken over; unreadable is recorded
    assert "unreadable" in inj.events[0]["details"]["bad_version"]


def sub(name):
    return SimpleNamespace(name=name)


def test_conservation_balances_the_ledger_and_cross_checks_the_emulator(monkeypatch):
    visible = {"a": 0, "b": 3, "c": 0}
    monkeypatch.setattr(session, "count_remaining", lambda runner, name: visible[name])
    monkeypatch.setattr(session, "_emulator_names", lambda runner, name: [name])
    runner = SimpleNamespace(system=SimpleNamespace(subscriptions=[sub("a"), sub("b"), sub("c"), sub("dlq")]))
    totals = {"a": {"published": 10, "acked": 7, "dead_lettered": 1, "filtered": 2, "backlog": 0},
              "b": {"published": 5, "acked": 2, "dead_lettered": 0, "filtered": 0, "backlog": 3},
              "c": {"published": 4, "acked": 4, "dead_lettered": 0, "filtered": 0, "backlog": 0},
              "dlq": {"published": 1, "acked": 0, "dead_lettered": 0, "filtered": 0, "backlog": None}}
    out = session.conservation(runner, totals)
    assert out["ok"] is True
    assert out["subscriptions"]["a"]["balance"] == 0 and out["subscriptions"]["b"]["emulator_visible"] == 3
    assert out["subscriptions"]["dlq"]["observed"] is False and out["subscriptions"]["dlq"]["balance"] is None
    # a ledger that lost a message fails
    totals["c"]["acked"] = 3
    assert session.conservation(runner, totals)["ok"] is False
    # a ledger that says empty while the emulator still holds messages fails too
    totals["c"]["acked"] = 4
    visible["c"] = 2
    bad = session.conservation(runner, totals)
    assert bad["ok"] is False and bad["subscriptions"]["c"]["balance"] == 0
    assert "backlog 0 by the harness's ledger, 2 held by the emulator" in bad["subscriptions"]["c"]["disagreement"]


def test_conservation_cross_checks_every_subscription_and_recounts_a_short_emulator(monkeypatch):
    """The emulator must hold what the ledger says is left, also when that is not 0 (issue
    20: the emulator held 546 on a filtered subscription whose ledger said 111); fewer is
    re-counted (a lease or a backoff may still hide messages), more fails at once."""
    counts = {"f": [111, 111], "g": [1, 2, 3], "h": [546]}
    monkeypatch.setattr(session, "_emulator_names", lambda runner, name: [name])
    runner = SimpleNamespace(system=SimpleNamespace(subscriptions=[sub("f"), sub("g"), sub("h")]))
    row = {"published": 500, "acked": 300, "dead_lettered": 0, "filtered": 89, "backlog": 111}
    totals = {"f": dict(row), "g": {**row, "backlog": 3, "filtered": 197}, "h": dict(row)}
    out = session.conservation(runner, totals, recount_s=5.0, counter=lambda name: counts[name].pop(0))
    subs = out["subscriptions"]
    assert subs["f"]["emulator_visible"] == 111 and "disagreement" not in subs["f"]
    assert subs["g"]["emulator_visible"] == 3 and "disagreement" not in subs["g"]  # visible after two recounts
    assert subs["h"]["disagreement"].startswith("backlog 111 by the harness's ledger, 546 held by the emulator")
    assert out["ok"] is False and counts["h"] == []  # counted once: more than the ledger is never a lease


def test_lag_recorder_measures_publish_to_ack_in_scenario_windows(monkeypatch):
    from surgesim.emulators.metrics import Ledger

    ledger = Ledger("sub", "t")
    ledger.see("m1", 100.0, ("a",))
    ledger.see("m2", 103.0, ("b",))
    metrics = SimpleNamespace(ledgers={"sub": ledger})
    lag = session.LagRecorder(metrics, t0_epoch=100.0, time_scale=10.0, window_s=1.0)
    monkeypatch.setattr(session.time, "time", lambda: 104.0)
    ledger.settle("m1")
    ledger.settle("m2")
    ledger.settle("unknown")  # the tap has not seen it: settled early, not measured
    assert (ledger.acked, ledger.backlog, ledger.early) == (2, 0, {"unknown"})
    rows = lag.rows()
    assert sorted(rows["time_s"].unique().tolist()) == [0.0, 30.0]  # wall windows 0 and 3, x time_scale
    s = lag.summaries()["sub"]
    assert s["count"] == 2 and s["max"] == pytest.approx(4.0, rel=0.05)


def test_surgesim_live_refuses_a_fault_it_cannot_inject_before_starting_anything(tmp_path):
    """exit 2 and `unsupported live: ...` before any emulator or process starts (issue 13:
    such a fault was recorded as unsupported and the run ended PASS)."""
    import time
    from pathlib import Path

    from click.testing import CliRunner

    from surgesim.commands.live import live

    system = Path(__file__).resolve().parents[1] / "integration" / "scenarios" / "honest" / "system.yaml"
    scenario = tmp_path / "restart.yaml"
    scenario.write_text(f"""name: restart_firestore
system: {system}
duration: 10s
traffic:
  sources:
    - {{name: items, rate: 1/s, request: {{service: api, route: items}}}}
faults:
  - {{kind: emulator_restart, target: firestore, at: 2s, duration: 2s}}
live: {{time_scale: 1, rate_scale: 1, locust: false}}
""")
    t0 = time.monotonic()
    res = CliRunner().invoke(live, [str(scenario), "--out", str(tmp_path / "run"), "--state-dir", str(tmp_path / "s")])
    assert res.exit_code == 2, res.output
    assert "unsupported live: emulator_restart of firestore at 2s: only the Pub/Sub emulator" in res.output
    assert time.monotonic() - t0 < 10 and not (tmp_path / "run").exists() and not (tmp_path / "s").exists()


def test_a_pull_subscription_short_through_the_proxy_names_a_consumer_outside_the_run(monkeypatch):
    """The ledger says 5 unacked, the emulator holds none, and the run's counting proxy
    passed only 190 of the 195 messages to the services: another process pulled 5 (measured
    live by pulling telemetry-livemap over REST beside a run: exactly this)."""
    monkeypatch.setattr(session, "_emulator_names", lambda runner, name: [name])
    book = {"delivered": 190, "redelivered": 0, "acked": 190, "nacked": 0, "outstanding": 0, "unknown_acks": 0}
    runner = SimpleNamespace(system=SimpleNamespace(subscriptions=[sub("telemetry-livemap")]),
                             bridges=SimpleNamespace(proxy_totals={"subscriptions": {"telemetry-livemap": book}}))
    totals = {"telemetry-livemap": {"published": 195, "acked": 190, "dead_lettered": 0, "filtered": 0, "backlog": 5}}
    out = session.conservation(runner, totals, recount_s=0.0, counter=lambda name: 0)
    text = out["subscriptions"]["telemetry-livemap"]["disagreement"]
    assert out["ok"] is False
    assert text.endswith("received 190 of 195 through the proxy: 5 went to a consumer outside this run "
                         "pulling telemetry-livemap on the same emulator")
    # all of them through the proxy: no outsider is blamed
    book["delivered"] = 195
    text = session.conservation(runner, totals, recount_s=0.0, counter=lambda name: 0)["subscriptions"]["telemetry-livemap"]["disagreement"]
    assert "outside" not in text and "received all 195" in text
