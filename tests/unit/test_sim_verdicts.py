"""Honest verdicts through `surgesim sim` (issue 13): a run in which things fail exits 1 and
names what failed, whatever its SLOs say; JUnit and summary.json carry the same checks."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from surgesim.cli import cli

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

SYSTEM = """
name: shop
topics:
  - {name: orders}
  - {name: orders.dlq}
subscriptions:
  - name: orders-sub
    topic: orders
    consumer: worker
    delivery: push
    ack_deadline: 10s
    retry: {min_backoff: 10s, max_backoff: 60s}
    dead_letter: {topic: orders.dlq, max_attempts: 5}
  - {name: orders-dlq-hold, topic: orders.dlq}
external_apis:
  - {name: payments, latency: 20ms}
services:
  - name: api
    routes:
      - name: checkout
        path: /checkout
        steps:
          - cpu: 1ms
          - call: {api: payments, timeout: 2s}
          - publish: {topic: orders}
      - {name: browse, path: /browse, response_status: 200, steps: [{cpu: 1ms}]}
  - name: worker
    steps: [{cpu: 1ms}]
"""


def write(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "shop.yaml").write_text(SYSTEM)
    scenario = tmp_path / "shop_checkout.yaml"
    scenario.write_text(textwrap.dedent("""
        name: shop_checkout
        system: shop.yaml
        duration: 20m
        traffic:
          sources:
            - {name: checkouts, rate: 5, request: {service: api, route: checkout}}
            - {name: browsing, rate: 20, request: {service: api, route: browse}}
        faults:
          - {kind: dependency_errors, target: payments, at: 5m, duration: 10m, error_rate: 1.0}
        slos:
          - p99(latency.api) < 1s
          - max(rejected.api) == 0
        """) + extra)
    return scenario


def sim(scenario: Path, out: Path) -> tuple[int, str, dict]:
    res = CliRunner().invoke(cli, ["sim", str(scenario), "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return res.exit_code, res.output, summary


def test_a_route_whose_dependency_fails_exits_1_naming_the_route_and_the_codes(tmp_path):
    code, output, summary = sim(write(tmp_path), tmp_path / "run")
    assert code == 1, output
    # the scenario's own SLOs all hold: only the implicit check catches the failed checkouts
    assert all(s["holds"] for s in summary["slos"])
    route = summary["totals"]["routes"]["api.checkout"]
    failed = route["status"]["500"]
    assert route["requests"] > 5000 and failed == route["errors"] and failed > 0.4 * route["requests"]
    line = next(ln for ln in output.splitlines() if ln.startswith("FAILED client_errors.api.checkout"))
    assert f"{failed:,} of {route['requests']:,} answers not 2xx (500: {failed:,}); 429: 0" in line
    assert "verdict: FAIL" in output and summary["verdict"] == "fail"
    assert not any(ln.startswith("FAILED client_errors.api.browse") for ln in output.splitlines())
    checks = {c["name"]: c for c in summary["checks"]}
    assert checks["client_errors.api.browse"]["holds"] and checks["client_errors.api.checkout"]["implicit"]
    # JUnit: one testcase per SLO and per check, the failed check with its detail
    suite = ET.parse(tmp_path / "run" / "junit.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert int(suite.get("tests")) == len(summary["slos"]) + len(summary["checks"])
    failure = cases["client_errors.api.checkout"].find("failure")
    assert failure is not None and "api.checkout" in failure.get("message")
    assert cases["client_errors.api.browse"].find("failure") is None
    # the report shows it too
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Implicit checks" in html and "client_errors(api.checkout)" in html and "implicit checks failed" in html


def test_the_same_run_relaxed_with_a_reason_passes_and_shows_the_reason(tmp_path):
    reason = "payments is down for 10 of the 20 minutes on purpose"
    scenario = write(tmp_path, extra=f'checks:\n  client_errors: {{routes: {{api.checkout: 0.6}}, reason: "{reason}"}}\n')
    code, output, summary = sim(scenario, tmp_path / "run")
    assert code == 0, output
    check = next(c for c in summary["checks"] if c["name"] == "client_errors.api.checkout")
    assert check["holds"] and check["reason"] == reason and 0.4 < check["observed"] <= 0.6
    assert "(relaxed)" in output and "verdict: PASS" in output
    assert reason in (tmp_path / "run" / "report.html").read_text()


def test_a_relaxation_without_a_reason_is_bad_input(tmp_path):
    scenario = write(tmp_path, extra="checks:\n  client_errors: {routes: {api.checkout: 0.6}}\n")
    res = CliRunner().invoke(cli, ["sim", str(scenario), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "shop_checkout.yaml:" in res.output and "checks.client_errors.reason: required field is missing" in res.output


def _without_gps(name: str, tmp_path: Path) -> Path:
    """A shipped Meridian scenario without the fleet's telemetry (the GPS firehose feeds the
    live map, geofence and BigQuery, none of the paths these tests judge), to keep them fast."""
    text = (SCENARIOS / name).read_text()
    lines = [ln for ln in text.splitlines() if "{name: gps," not in ln]
    text = "\n".join(lines).replace("gps: 5100/s, ", "").replace("systems/", str(SCENARIOS / "systems") + "/")
    text = text.replace("plans/", str(SCENARIOS / "plans") + "/")
    out = tmp_path / name
    out.write_text(text)
    return out


def test_dispatch_wave_4x_does_not_pass_while_it_dead_letters(tmp_path):
    code, output, summary = sim(_without_gps("dispatch_wave_4x.yaml", tmp_path), tmp_path / "run")
    assert code == 1, output
    dead = {n: t["dead_lettered"] for n, t in summary["totals"]["subscriptions"].items() if t["dead_lettered"]}
    assert dead.get("billing-sub", 0) > 100_000 and dead.get("notification-sub", 0) > 10_000
    for sub in dead:
        assert any(ln.startswith(f"FAILED dead_letters.{sub}: {sub}: {dead[sub]:,} dead-lettered") for ln in output.splitlines())
    assert summary["verdict"] == "fail"


def test_sms_degradation_drain_is_the_time_the_backlog_was_up(tmp_path):
    code, output, summary = sim(_without_gps("sms_degradation.yaml", tmp_path), tmp_path / "run")
    drain = next(s for s in summary["slos"] if s["text"].startswith("drain(backlog.notification-sub)"))
    peak = summary["totals"]["subscriptions"]["notification-sub"]["peak_backlog"]
    assert peak > 100_000
    # minutes, not the 0 s it read when it was timed from the fault's end (the backlog had
    # drained 13 minutes before the gateway recovered)
    assert 5 * 60 < drain["observed"] < 30 * 60 and drain["holds"]
    assert code == 0, output


TRIGGER_SYSTEM = """
name: notes
stores:
  firestore: [{name: notes}]
triggers:
  - {name: notes-indexer, collection: notes, target: indexer}
services:
  - name: api
    routes:
      - name: save
        path: /notes
        steps: [{cpu: 1ms}, {firestore: {op: write, collection: notes, change: NoteSaved}}]
  - name: indexer
    steps: [{cpu: 1ms}]
"""


def test_trigger_deliveries_given_up_exit_1_naming_the_trigger(tmp_path):
    """The indexer cannot handle the event for longer than Eventarc retries (24 h): the
    deliveries are given up, a loss, and the run fails naming the trigger."""
    (tmp_path / "notes.yaml").write_text(TRIGGER_SYSTEM)
    scenario = tmp_path / "notes_lost.yaml"
    scenario.write_text(textwrap.dedent("""
        name: notes_lost
        system: notes.yaml
        duration: 26h
        step: 60s
        traffic:
          sources:
            - {name: saves, rate: 0.05, request: {service: api, route: save}}
        faults:
          - {kind: bad_deploy, target: indexer, at: 0s, duration: 25h, matching: 'attributes.eventType = "NoteSaved"'}
        """))
    code, output, summary = sim(scenario, tmp_path / "run")
    assert code == 1, output
    t = summary["totals"]["triggers"]["notes-indexer"]
    assert t["given_up"] > 100 and t["changes"] == t["delivered"] + t["given_up"] + t["pending"]
    line = next(ln for ln in output.splitlines() if ln.startswith("FAILED triggers.notes-indexer"))
    assert f"{t['given_up']:,} given up" in line
    # the saves themselves were answered: only the trigger check fails
    assert [c["name"] for c in summary["checks"] if not c["holds"]] == ["triggers.notes-indexer"]
