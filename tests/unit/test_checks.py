"""The implicit checks (surgesim.checks): each one fails for the right reason, holds when the
run was clean, and holds when the scenario relaxes it explicitly (with a reason).

The inputs are the summary fields both engines write (docs/run-directory.md); the scenario
and system are real files loaded through the schema, so `checks:` is validated as a user's."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from surgesim.checks import final_verdict, implicit_checks
from surgesim.schema import SchemaError, load_experiment

SYSTEM = """
name: tiny
topics:
  - {name: orders}
  - {name: orders.dlq}
subscriptions:
  - name: orders-sub
    topic: orders
    consumer: worker
    delivery: push
    ack_deadline: 10s
    dead_letter: {topic: orders.dlq, max_attempts: 5}
  - name: audit-sub
    topic: orders
    consumer: worker
    filter: 'attributes.kind = "audit"'
    dead_letter: {topic: orders.dlq, max_attempts: 5}
  - {name: orders-dlq-hold, topic: orders.dlq}
stores:
  firestore: [{name: docs}]
triggers:
  - {name: docs-trigger, collection: docs, target: worker}
services:
  - name: api
    routes:
      - {name: create, path: /create}
      - {name: cancel, path: /cancel, response_status: 204}
  - name: worker
    steps: [{cpu: 1ms}]
"""


def experiment(tmp_path: Path, extra: str = "", faults: str = "") -> object:
    (tmp_path / "system.yaml").write_text(SYSTEM)
    (tmp_path / "scenario.yaml").write_text(textwrap.dedent("""
        name: t
        system: system.yaml
        duration: 10m
        traffic:
          sources:
            - {name: creates, rate: 1, request: {service: api, route: create}}
        """) + faults + extra)
    return load_experiment(tmp_path / "scenario.yaml")


def clean_summary() -> dict:
    sub = {"published": 100, "acked": 100, "dead_lettered": 0, "filtered": 0, "expired": 0, "backlog": 0}
    return {
        "totals": {
            "routes": {"api.create": {"requests": 1000, "status": {"202": 1000}, "rejected": 0, "errors": 0},
                       "api.cancel": {"requests": 10, "status": {"204": 10}, "rejected": 0, "errors": 0}},
            "subscriptions": {"orders-sub": dict(sub), "audit-sub": dict(sub), "orders-dlq-hold": dict(sub)},
            "triggers": {"docs-trigger": {"changes": 60, "delivered": 60, "given_up": 0, "pending": 0}},
        },
        "conservation": {"ok": True, "subscriptions": {n: {**sub, "balance": 0} for n in
                                                       ("orders-sub", "audit-sub", "orders-dlq-hold")}},
    }


def by_name(checks: list[dict]) -> dict[str, dict]:
    return {c["name"]: c for c in checks}


def failed(checks: list[dict]) -> list[str]:
    return [c["name"] for c in checks if not c["holds"]]


def test_a_clean_run_passes_every_check(tmp_path):
    exp = experiment(tmp_path)
    checks = implicit_checks(clean_summary(), exp.scenario, exp.system, faults=[])
    assert failed(checks) == []
    assert all(c["implicit"] is True and c["text"] and c["detail"] for c in checks)
    assert final_verdict([{"text": "x", "holds": True}], checks) == "pass"
    names = set(by_name(checks))
    assert names == {"client_errors.api.create", "client_errors.api.cancel", "dead_letters.orders-sub",
                     "dead_letters.audit-sub", "conservation", "expired", "triggers.docs-trigger", "faults"}


# ---- client errors ----------------------------------------------------------------------------


def test_every_answer_a_400_fails_naming_the_route_and_the_codes(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    s["totals"]["routes"]["api.create"] = {"requests": 756, "status": {"400": 749, "503": 7}, "rejected": 0,
                                           "errors": 756}
    checks = implicit_checks(s, exp.scenario, exp.system)
    c = by_name(checks)["client_errors.api.create"]
    assert not c["holds"] and c["observed"] == pytest.approx(1.0)
    assert c["detail"] == "api.create: 756 of 756 answers not 2xx (400: 749, 503: 7); 429: 0 of 756 requests"
    assert failed(checks) == ["client_errors.api.create"]
    assert final_verdict([{"text": "p99(latency.api) < 1s", "holds": True}], checks) == "fail"


def test_rejections_are_reported_apart_and_do_not_count_as_errors(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    # 900 rejected with 429, 100 let in: 1 of them a 500 is 1% of the answers judged (holds);
    # 2 of them would be 2% (fails) although it is only 0.2% of all requests.
    s["totals"]["routes"]["api.create"] = {"requests": 1000, "status": {"429": 900, "202": 99, "500": 1},
                                           "rejected": 900, "errors": 1}
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["client_errors.api.create"]
    assert c["holds"] and c["observed"] == pytest.approx(0.01)
    assert "429: 900 of 1,000 requests" in c["detail"]
    s["totals"]["routes"]["api.create"]["status"] = {"429": 900, "202": 98, "500": 2}
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["client_errors.api.create"]
    assert not c["holds"] and c["observed"] == pytest.approx(0.02)


def test_requests_without_an_answer_are_errors_and_a_routes_own_status_is_success(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    s["totals"]["routes"]["api.create"] = {"requests": 100, "status": {"202": 90}, "rejected": 0, "errors": 10}
    s["totals"]["routes"]["api.cancel"] = {"requests": 10, "status": {"204": 10}, "rejected": 0, "errors": 0}
    checks = by_name(implicit_checks(s, exp.scenario, exp.system))
    assert not checks["client_errors.api.create"]["holds"]
    assert "no answer: 10" in checks["client_errors.api.create"]["detail"]
    assert checks["client_errors.api.cancel"]["holds"]


def test_client_errors_relaxed_per_route_with_the_reason_shown(tmp_path):
    exp = experiment(tmp_path, extra=textwrap.dedent("""
        checks:
          client_errors: {routes: {api.create: 0.5}, reason: "half the creates are deliberately invalid"}
        """))
    s = clean_summary()
    s["totals"]["routes"]["api.create"] = {"requests": 100, "status": {"202": 60, "400": 40}, "rejected": 0}
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["client_errors.api.create"]
    assert c["holds"] and c["text"] == "client_errors(api.create) <= 50%"
    assert c["reason"] == "half the creates are deliberately invalid" and c["reason"] in c["detail"]
    s["totals"]["routes"]["api.create"]["status"] = {"202": 40, "400": 60}
    assert not by_name(implicit_checks(s, exp.scenario, exp.system))["client_errors.api.create"]["holds"]


def test_no_per_route_outcomes_fails_when_the_scenario_sends_requests(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    del s["totals"]["routes"]
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["client_errors"]
    assert not c["holds"] and "totals.routes" in c["detail"]


# ---- dead letters -----------------------------------------------------------------------------


def test_any_dead_letter_fails_naming_the_subscription(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    s["totals"]["subscriptions"]["audit-sub"]["dead_lettered"] = 3
    checks = implicit_checks(s, exp.scenario, exp.system)
    assert failed(checks) == ["dead_letters.audit-sub"]
    c = by_name(checks)["dead_letters.audit-sub"]
    assert c["observed"] == 3 and c["detail"] == "audit-sub: 3 dead-lettered; expected none"


def test_dead_letters_allowed_with_a_reason(tmp_path):
    exp = experiment(tmp_path, extra='checks: {dead_letters: {allow: {audit-sub: 5}, reason: "audit rows are best effort"}}\n')
    s = clean_summary()
    s["totals"]["subscriptions"]["audit-sub"]["dead_lettered"] = 5
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["dead_letters.audit-sub"]
    assert c["holds"] and c["reason"] == "audit rows are best effort"
    s["totals"]["subscriptions"]["audit-sub"]["dead_lettered"] = 6
    assert not by_name(implicit_checks(s, exp.scenario, exp.system))["dead_letters.audit-sub"]["holds"]


def test_a_poison_message_must_dead_letter_exactly_its_count_where_it_is_delivered(tmp_path):
    exp = experiment(tmp_path, faults="faults:\n  - {kind: poison_message, topic: orders, at: 1m, count: 4}\n")
    s = clean_summary()
    # orders-sub takes every message; audit-sub's filter drops the poison; the holding
    # subscription has no consumer: only orders-sub is expected to dead-letter, 4 exactly.
    s["totals"]["subscriptions"]["orders-sub"]["dead_lettered"] = 4
    checks = by_name(implicit_checks(s, exp.scenario, exp.system))
    assert checks["dead_letters.orders-sub"]["holds"] and checks["dead_letters.orders-sub"]["text"] == "dead_letters(orders-sub) == 4"
    assert checks["dead_letters.audit-sub"]["text"] == "dead_letters(audit-sub) == 0"
    for wrong, why in ((3, "1 poison messages not dead-lettered"), (5, "5 dead-lettered")):
        s["totals"]["subscriptions"]["orders-sub"]["dead_lettered"] = wrong
        c = by_name(implicit_checks(s, exp.scenario, exp.system))["dead_letters.orders-sub"]
        assert not c["holds"] and why in c["detail"]


def test_a_bad_deploy_needs_a_declared_expectation_and_then_more_than_zero(tmp_path):
    fault = ("faults:\n  - {kind: bad_deploy, target: worker, at: 1m, duration: 2m, "
             "matching: 'attributes.kind = \"x\"'}\n")
    exp = experiment(tmp_path, faults=fault)
    s = clean_summary()
    s["totals"]["subscriptions"]["orders-sub"]["dead_lettered"] = 40
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["dead_letters.orders-sub"]
    assert not c["holds"] and "cannot be derived" in c["detail"] and "checks.dead_letters.allow" in c["detail"]
    exp = experiment(tmp_path, faults=fault, extra=(
        'checks: {dead_letters: {allow: {orders-sub: 50, audit-sub: 0}, reason: "the bad version raises on kind x"}}\n'))
    c = by_name(implicit_checks(s, exp.scenario, exp.system))
    assert c["dead_letters.orders-sub"]["holds"] and c["dead_letters.orders-sub"]["text"] == "dead_letters(orders-sub) in 1..50"
    s["totals"]["subscriptions"]["orders-sub"]["dead_lettered"] = 0  # the fault never bit: not rehearsed
    assert not by_name(implicit_checks(s, exp.scenario, exp.system))["dead_letters.orders-sub"]["holds"]
    s["totals"]["subscriptions"]["orders-sub"]["dead_lettered"] = 51
    assert not by_name(implicit_checks(s, exp.scenario, exp.system))["dead_letters.orders-sub"]["holds"]


# ---- losses -----------------------------------------------------------------------------------


def test_broken_conservation_fails_naming_the_subscription(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    s["conservation"]["ok"] = False
    s["conservation"]["subscriptions"]["orders-sub"]["balance"] = 7
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["conservation"]
    assert not c["holds"] and "orders-sub: balance +7" in c["detail"]
    del s["conservation"]
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["conservation"]
    assert not c["holds"] and "no conservation" in c["detail"]


def test_live_conservation_catches_messages_the_emulator_still_holds(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    s["conservation"]["subscriptions"]["orders-sub"].update(backlog=0, emulator_visible=12)
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["conservation"]
    assert not c["holds"] and "12 still visible in the emulator" in c["detail"]


def test_expired_messages_are_a_loss_unless_allowed(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    s["totals"]["subscriptions"]["orders-sub"]["expired"] = 9
    checks = implicit_checks(s, exp.scenario, exp.system)
    assert failed(checks) == ["expired"]
    assert by_name(checks)["expired"]["observed"] == 9
    assert "orders-sub: 9 expired" in by_name(checks)["expired"]["detail"]
    exp = experiment(tmp_path, extra='checks: {lost: {allow: {orders-sub: 10}, reason: "a 1h retention is the point"}}\n')
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["expired"]
    assert c["holds"] and c["reason"] == "a 1h retention is the point"
    s["totals"]["subscriptions"]["audit-sub"]["expired"] = 1  # allowed on orders-sub only
    assert not by_name(implicit_checks(s, exp.scenario, exp.system))["expired"]["holds"]


def test_a_trigger_delivery_given_up_fails_naming_the_trigger(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    s["totals"]["triggers"]["docs-trigger"] = {"changes": 60, "delivered": 0, "given_up": 60, "pending": 0}
    checks = implicit_checks(s, exp.scenario, exp.system)
    assert failed(checks) == ["triggers.docs-trigger"]
    assert by_name(checks)["triggers.docs-trigger"]["detail"] == (
        "trigger docs-trigger: 60 changes, 0 delivered, 60 given up, 0 pending (changes = delivered + given up + pending)")
    exp = experiment(tmp_path, extra='checks: {lost: {allow: {docs-trigger: 60}, reason: "the handler is meant to reject"}}\n')
    assert failed(implicit_checks(s, exp.scenario, exp.system)) == []


def test_trigger_changes_must_all_be_accounted_for(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    s["totals"]["triggers"]["docs-trigger"] = {"changes": 60, "delivered": 55, "given_up": 0, "pending": 2}
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["triggers.docs-trigger"]
    assert not c["holds"] and "+3 unaccounted for" in c["detail"]
    del s["totals"]["triggers"]
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["triggers"]
    assert not c["holds"] and "docs-trigger" in c["detail"]


# ---- processes and faults ---------------------------------------------------------------------


def test_a_process_that_died_fails_with_its_exit_code_and_log(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    s["processes"] = {
        "worker": {"kind": "service", "running_at_end": False, "exit_code": 137, "stopped_by_fault": False,
                   "log_tail": ["starting", "Killed"]},
        "firestore": {"kind": "emulator", "running_at_end": True, "exit_code": None, "stopped_by_fault": False},
        "api": {"kind": "service", "running_at_end": False, "exit_code": 0, "stopped_by_fault": True},
    }
    checks = implicit_checks(s, exp.scenario, exp.system)
    assert failed(checks) == ["processes.worker"]
    c = by_name(checks)["processes.worker"]
    assert c["observed"] == 137 and c["detail"] == (
        "service worker: exited with code 137 before the end; last log lines: starting | Killed")
    s2 = clean_summary()  # the simulator has no processes: no check
    assert not any(n.startswith("processes") for n in by_name(implicit_checks(s2, exp.scenario, exp.system)))


def test_a_fault_not_injected_fails_the_run(tmp_path):
    exp = experiment(tmp_path, faults="faults:\n  - {kind: emulator_restart, at: 1m, duration: 30s}\n")
    s = clean_summary()
    timeline = [{"kind": "emulator_restart", "target": "", "start_s": 60.0, "end_s": 60.0,
                 "details": {"unsupported": True, "reason": "not applied live"}}]
    c = by_name(implicit_checks(s, exp.scenario, exp.system, faults=timeline))["faults"]
    assert not c["holds"] and "emulator_restart on ? at 60s unsupported: not applied live" in c["detail"]
    ok = [{"kind": "emulator_restart", "target": "", "start_s": 60.0, "end_s": 90.0, "details": {}},
          {"kind": "wave", "target": "creates", "start_s": 0.0, "end_s": 10.0, "details": {}}]
    assert by_name(implicit_checks(s, exp.scenario, exp.system, faults=ok))["faults"]["holds"]
    # declared, never recorded
    c = by_name(implicit_checks(s, exp.scenario, exp.system, faults=[]))["faults"]
    assert not c["holds"] and "declared but never recorded" in c["detail"]
    # the live summary's own list
    s["faults_unsupported"] = [{"kind": "emulator_restart", "target": "", "start_s": 60.0, "unsupported": True}]
    assert not by_name(implicit_checks(s, exp.scenario, exp.system))["faults"]["holds"]


# ---- the `checks:` block ----------------------------------------------------------------------


def test_a_relaxation_needs_a_reason(tmp_path):
    with pytest.raises(SchemaError) as err:
        experiment(tmp_path, extra="checks:\n  dead_letters: {allow: {orders-sub: 3}}\n")
    assert any("scenario.yaml:" in p and "checks.dead_letters.reason" in p and "required" in p
               for p in err.value.problems), err.value.problems
    with pytest.raises(SchemaError):
        experiment(tmp_path, extra='checks:\n  dead_letters: {allow: {orders-sub: 3}, reason: "  "}\n')


def test_relaxations_name_things_that_exist_with_file_and_line(tmp_path):
    with pytest.raises(SchemaError) as err:
        experiment(tmp_path, extra=textwrap.dedent("""
            checks:
              client_errors: {routes: {api.delete: 0.5}, reason: "r"}
              dead_letters: {allow: {order-sub: 3}, reason: "r"}
              lost: {allow: {no-such: 1}, reason: "r"}
            """))
    problems = err.value.problems
    assert any(p.startswith(f"{tmp_path / 'scenario.yaml'}:") and "checks.client_errors.routes.api.delete" in p
               and "'api.delete' is not a SERVICE.ROUTE" in p for p in problems), problems
    assert any("checks.dead_letters.allow.order-sub" in p and "not a subscription" in p for p in problems), problems
    assert any("checks.lost.allow.no-such" in p and "neither a subscription nor a trigger" in p for p in problems)
    line = next(p for p in problems if "order-sub" in p).split(":")[1]
    text = (tmp_path / "scenario.yaml").read_text().splitlines()
    assert "order-sub" in text[int(line) - 1]


def test_a_declared_trigger_missing_from_the_totals_fails_unless_its_target_was_skipped_live(tmp_path):
    exp = experiment(tmp_path)
    s = clean_summary()
    s["totals"]["triggers"] = {}  # a bridge that was never counted, e.g. a trigger kind the totals forgot
    c = by_name(implicit_checks(s, exp.scenario, exp.system))["triggers"]
    assert not c["holds"] and "docs-trigger" in c["detail"]
    target = next(t.target for t in exp.system.triggers if t.name == "docs-trigger")
    s.update(mode="live", live={"skipped": {target: "no app: or command: in the system file"}})
    assert "triggers" not in by_name(implicit_checks(s, exp.scenario, exp.system))
