"""Meridian's dispatch saga run live from its Workflows YAML (scenarios/systems/
meridian-dispatch.workflow.yaml): SystemRunner starts the local executor as the `dispatch`
workflow, reached by dispatch.requests' push subscription through its front, with the real
fleet allocator and command services and the fake route optimiser and SMS gateway on the
emulators. The happy path, then the compensation under a route-optimizer outage set through
the fake's admin API (the dependency_outage fault's own mechanism)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from surgesim.emulators import Clients
from surgesim.live import SystemRunner
from surgesim.checks import workflow_checks
from surgesim.schema import System, load_system
from surgesim.schema.scenario import Checks
from surgesim.workflows.records import workflow_totals
from tests.integration.bridges_support import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MERIDIAN = load_system(ROOT / "scenarios" / "systems" / "meridian.yaml")
SHIPMENT = {"shipperId": "acme", "recipient": {"name": "Ada", "phone": "+447700900123"},
            "destination": {"lat": 51.5, "lng": -0.12}, "weightKg": 1}


SAGA = ROOT / "scenarios" / "systems" / "meridian-dispatch.workflow.yaml"


def dispatch_only() -> System:
    """meridian.yaml cut down to the saga's path; its workflow's `source:` (set in the system
    file) made absolute, as the live session's base_dir does."""
    workflow = MERIDIAN.workflows[0].model_copy(update={"source": str(SAGA)})
    return MERIDIAN.model_copy(update={"workflows": [workflow],
        "topics": [MERIDIAN.topic("dispatch.requests"), MERIDIAN.topic("dispatch.dlq")],
        "subscriptions": [MERIDIAN.subscription("dispatch-sub"), MERIDIAN.subscription("dispatch-dlq-hold")],
        "services": [MERIDIAN.service("fleet-allocator"), MERIDIAN.service("command")], "triggers": [],
        "jobs": [], "external_apis": [MERIDIAN.api("route-optimizer"), MERIDIAN.api("sms-gateway")]})


def records(run, name="dispatch") -> dict[str, dict]:
    path = run.workflow_records[name]
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out[(rec["result"] or {}).get("dispatchId") if isinstance(rec["result"], dict) else rec["execution_id"]] = rec
    return out


def test_dispatch_saga_runs_live_and_compensates_under_an_optimiser_outage(gcp, tmp_path):
    system = dispatch_only()
    with SystemRunner(system, None, gcp.state_dir, log_dir=tmp_path / "logs", purge=True,
                      service_env={"dispatch": {"MAX_REQUEUES": "1"}}) as run:
        assert "dispatch" not in run.skipped and "dispatch" in run.procs
        http = httpx.Client(trust_env=False, timeout=15)
        allocator, command = run.urls["fleet-allocator"], run.urls["command"]
        publisher = Clients(run.stack.env_vars(), project=system.project).publisher()
        topic = publisher.topic_path(system.project, "dispatch.requests")

        def new_parcel() -> str:
            r = http.post(command + "/shipments", json=SHIPMENT, headers={"X-Request-Id": "r-" + uuid.uuid4().hex})
            assert r.status_code == 202, r.text
            return r.json()["parcelId"]

        def new_vehicle() -> str:
            vid = "V" + uuid.uuid4().hex[:8]
            r = http.put(f"{allocator}/vehicles/{vid}", json={"driverId": "D" + vid, "driverPhone": "+447700900555"})
            assert r.status_code == 200, r.text
            return vid

        def dispatch(did: str, pid: str) -> None:
            publisher.publish(topic, json.dumps({"dispatchId": did, "parcelId": pid}).encode(),
                              dispatchId=did, parcelId=pid).result(timeout=10)

        # happy path: reserve -> optimise -> assign -> confirm, through the push and the front
        vid = new_vehicle()
        pid = new_parcel()
        dispatch("d-happy", pid)
        assert wait_until(lambda: "d-happy" in records(run), timeout=60), records(run)
        happy = records(run)["d-happy"]
        assert happy["state"] == "SUCCEEDED" and happy["result"] == {"dispatchId": "d-happy", "state": "succeeded",
                                                                     "vehicleId": vid}
        assert happy["argument"]["data"]["message"]["attributes"]["dispatchId"] == "d-happy"
        assert run.fake_admin("sms-gateway", "GET", "/admin/stats").json()["calls"] == 1
        assert http.post(allocator + "/reservations", json={"dispatchId": "probe-1", "vehicleId": vid}).status_code == 409

        # compensation: the optimiser is down; the vehicle is released, the request requeued once
        vid2 = new_vehicle()
        run.fake_admin("route-optimizer", "PUT", "/admin/behaviour", json={"outage": True})
        dispatch("d-out", new_parcel())
        assert wait_until(lambda: "d-out-r1" in records(run), timeout=90), records(run)
        first, requeued = records(run)["d-out"], records(run)["d-out-r1"]
        assert first["result"] == {"dispatchId": "d-out", "state": "compensated", "failedStep": "optimise",
                                   "requeuedAs": "d-out-r1"}
        assert requeued["result"]["state"] == "compensated" and requeued["result"]["requeuedAs"] is None
        retries = [s for s in first["steps"] if s["step"].endswith("optimise.retry")]
        assert [r["error"]["code"] for r in retries] == [503, 503]
        # released: the vehicle can be reserved again
        assert http.post(allocator + "/reservations", json={"dispatchId": "probe-2", "vehicleId": vid2}).status_code == 201
        assert run.fake_admin("sms-gateway", "GET", "/admin/stats").json()["calls"] == 1  # no confirm under the outage

        # a request the saga cannot read (no dispatchId): the execution ends FAILED
        publisher.publish(topic, json.dumps({"parcelId": "no-dispatch-id"}).encode()).result(timeout=10)
        assert wait_until(lambda: len(records(run)) == 4, timeout=60), records(run)
        publisher.stop()

    # what `surgesim live` puts in summary.json (totals.workflows) and judges (implicit checks)
    totals = workflow_totals(run.workflow_records)
    saga = totals["dispatch"]
    assert saga["executions"] == 4 and saga["states"] == {"FAILED": 1, "SUCCEEDED": 3}
    assert saga["outcomes"] == {"compensated": 2, "succeeded": 1}
    assert saga["retries"] >= 2  # the optimiser's two retries under the outage
    assert saga["duration_s"]["max"] >= 6.0  # the compensated one waited out 2 s + 4 s of backoff
    assert "KeyError" in saga["failed_examples"][0]["error"] and "dispatchId" in saga["failed_examples"][0]["error"]
    [check] = workflow_checks({"totals": {"workflows": totals}}, SimpleNamespace(checks=Checks()))
    assert not check["holds"] and "1 of 4 executions failed" in check["detail"]
    relaxed = SimpleNamespace(checks=Checks.model_validate(
        {"workflows": {"allow": {"dispatch": 1}, "reason": "one malformed request on purpose"}}))
    assert workflow_checks({"totals": {"workflows": totals}}, relaxed)[0]["holds"]


def test_the_dispatch_saga_outage_scenario_runs_live_and_compensates(gcp, tmp_path):
    """scenarios/dispatch_saga_outage.yaml as a user runs it: `surgesim live` starts Meridian,
    the saga on the local executor behind dispatch-sub's push, and injects the scenario's own
    5-minute route-optimizer outage (a dependency_outage fault, not the admin API by hand).
    Dispatches before and after it take the happy path; those in it compensate (release,
    requeue); nothing fails or dead-letters, and the report shows the executions."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    log = tmp_path / "live.log"
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "surgesim.cli", "live", str(ROOT / "scenarios" / "dispatch_saga_outage.yaml"),
                             "--out", str(out), "--state-dir", str(gcp.state_dir)], stdout=f, stderr=subprocess.STDOUT,
                            timeout=600, env={**os.environ, "COLUMNS": "200"}).returncode
    text = log.read_text(errors="replace")
    summary = json.loads((out / "summary.json").read_text())
    wf = summary["totals"]["workflows"]["dispatch"]
    outcomes = wf["outcomes"]
    assert outcomes.get("succeeded", 0) >= 5 and outcomes.get("compensated", 0) >= 1, (wf, text[-3000:])
    assert wf["failed"] == 0 and wf["executions"] == wf["succeeded"], wf
    (fault,) = [e for e in json.loads((out / "faults.json").read_text()) if e["kind"] == "dependency_outage"]
    assert fault["target"] == "route-optimizer"
    html = (out / "report.html").read_text()
    assert "Workflow executions" in html and "compensated" in html
    assert rc == 0 and summary["verdict"] == "pass", text[-3000:]
