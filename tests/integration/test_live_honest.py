"""A live run in which things fail must not pass (issues 13 and 20), with a user's own two
services (tests/integration/apps/honest_app.py, tests/integration/scenarios/honest/):

* every request answered 400 -> exit 1, the route and its status counts named;
* every trigger delivery refused until the bridge gives up -> exit 1, the trigger named;
* an emulator killed (-9) mid-run -> the run ends within seconds, exit 1, one line naming
  it, no traceback (Firestore and Pub/Sub);
* messages acked behind the harness's back -> the end-of-run cross-check against the
  emulator fails with both numbers, though the ledger balances.

Short runs (4-12 s of traffic at a few requests a second); 30-80 s each with start-up."""

from __future__ import annotations

import json
import os
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from tests.integration.live_support import LiveRun, own_stack, stack_left

pytestmark = pytest.mark.integration

HONEST = Path(__file__).resolve().parent / "scenarios" / "honest"


def test_every_request_answered_400_exits_1_naming_the_route_and_its_counts(gcp, tmp_path):
    run = LiveRun(HONEST / "rejected.yaml", tmp_path / "run", gcp.state_dir, tmp_path / "run.log")
    try:
        rc = run.wait(180)
    finally:
        run.kill()
    text = run.text()
    assert rc == 1, text[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    route = summary["totals"]["routes"]["api.reject"]
    n = route["requests"]
    assert n > 10 and route["status"] == {"400": n} and route["errors"] == n and route["rejected"] == 0, route
    assert summary["verdict"] == "fail"
    (line,) = [ln for ln in text.splitlines() if ln.startswith("FAILED client_errors.api.reject")]
    assert f"{n:,} of {n:,} answers not 2xx (400: {n:,})" in line, line
    # the status line showed them as they came
    assert any("4xx" in ln and " 4xx 0 " not in ln for ln in text.splitlines() if ln.lstrip().startswith("wall")), text
    failures = [c for c in ET.parse(tmp_path / "run" / "junit.xml").iter("testcase") if c.find("failure") is not None]
    assert any("api.reject" in c.get("name") for c in failures), [c.get("name") for c in failures]


def test_trigger_deliveries_given_up_exit_1_naming_the_trigger(gcp, tmp_path):
    run = LiveRun(HONEST / "triggers_lost.yaml", tmp_path / "run", gcp.state_dir, tmp_path / "run.log")
    try:
        rc = run.wait(240)
    finally:
        run.kill()
    text = run.text()
    assert rc == 1, text[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    t = summary["totals"]["triggers"]["items-to-sink"]
    written = summary["totals"]["routes"]["api.items"]["status"].get("202", 0)
    assert written > 0 and t["changes"] == written and t["given_up"] == written and t["delivered"] == 0, (t, written)
    assert t["pending"] == 0 and t["failed_attempts"] == 10 * written, t
    assert f"FAILED triggers.items-to-sink: trigger items-to-sink: {written} changes, 0 delivered, " \
           f"{written} given up" in text, text[-2000:]


@pytest.mark.parametrize("emulator", ["firestore", "pubsub"])
def test_a_killed_emulator_ends_the_run_within_seconds_naming_it(tmp_path, emulator):
    state = tmp_path / "state"
    stack, ports = own_stack(state)
    try:
        run = LiveRun(HONEST / "watchdog.yaml", tmp_path / "run", state, tmp_path / "run.log")
        try:
            run.wait_for("requests", 120)
            time.sleep(3)  # traffic flowing
            pgid = stack.emulators[emulator].pgid
            os.killpg(pgid, signal.SIGKILL)  # kill -9 of the emulator (its java included)
            killed = time.monotonic()
            rc = run.wait(90)
            took = time.monotonic() - killed
        finally:
            run.kill()
        text = run.text()
        assert rc == 1, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert f"live run failed: the {emulator} emulator" in text and "stopped during the run" in text, text[-2000:]
        # said on the console within seconds, by name
        assert f"!! emulator {emulator}-emulator exited unexpectedly" in text, text[-2000:]
        assert took < 60, (took, text[-2000:])
        partial = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert partial["interrupted"] is True and emulator in partial["interrupted_by"]
        assert partial["processes"][f"{emulator}-emulator"]["running_at_end"] is False
        assert partial["processes"]["api"]["running_at_end"] is True  # the services were fine
    finally:
        stack.down()
    assert not stack_left(state, ports)


def test_messages_acked_behind_the_harness_fail_the_emulator_cross_check(gcp, tmp_path):
    """The ledger balances (it saw every publish; those messages are still `backlog` to it)
    but the emulator holds none of them: issue 20's blind spot, now a failed check."""
    run = LiveRun(HONEST / "rogue_ack.yaml", tmp_path / "run", gcp.state_dir, tmp_path / "run.log")
    base = f"http://{gcp.endpoint('pubsub')}/v1/projects/honest-test/subscriptions/pings-sub"
    stolen: set[str] = set()
    try:
        run.wait_for("requests", 120)
        with httpx.Client(trust_env=False, timeout=10) as http:
            end = time.monotonic() + 6
            while time.monotonic() < end:
                got = http.post(base + ":pull", json={"maxMessages": 50, "returnImmediately": True}).json()
                got = got.get("receivedMessages", [])
                if got:
                    http.post(base + ":acknowledge", json={"ackIds": [m["ackId"] for m in got]}).raise_for_status()
                    stolen |= {m["message"]["messageId"] for m in got}
                time.sleep(0.05)
        rc = run.wait(180)
    finally:
        run.kill()
    text = run.text()
    assert stolen, "the test took no message from the push bridge"
    assert rc == 1, text[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    row = summary["conservation"]["subscriptions"]["pings-sub"]
    # (a lease that expired on the bridge could hand one message to both: hence <=)
    assert row["balance"] == 0 and 0 < row["backlog"] <= len(stolen) and row["emulator_visible"] == 0, row
    assert row["disagreement"] == (f"backlog {row['backlog']:,} by the harness's ledger, 0 held by the emulator "
                                   "(pings-sub)"), row
    assert summary["conservation"]["ok"] is False and summary["verdict"] == "fail"
