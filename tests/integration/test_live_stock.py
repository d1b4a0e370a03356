"""The live run's parcel stock written into the real Firestore emulator (surgesim/live/
stock.py) against the real command service: the stocked documents have the shape of the
ones the service writes for the same commands, and the service takes the next command on
a stocked parcel (and replays a stocked request id) as it would on its own parcel."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from surgesim.live.stock import write_stock
from surgesim.loadtests.actions import Payloads, load_stock
from surgesim.loadtests.plan import LIFECYCLE_ROUTES, LivePlan
from surgesim.services.common.devserver import run_service

pytestmark = pytest.mark.integration


def shape(value):
    """A document's structure: keys and value types, recursively (values differ per parcel)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


@pytest.fixture(scope="module")
def command(gcp):
    with run_service("surgesim.services.meridian.command:app", gcp.env_vars()) as svc:
        yield svc


def test_stocked_parcels_look_like_the_services_and_take_the_next_command(gcp, command, tmp_path):
    plan = LivePlan(rate_scale=0.002)  # dispatch_wave.yaml, thinned to a few dozen parcels
    db = gcp.clients.firestore()
    info = write_stock(db, plan, tmp_path / "stock.json", "stk" + dt.datetime.now().strftime("%H%M%S"))
    assert info["documents"] > 0 and set(info["counts"]) == set(LIFECYCLE_ROUTES[1:])
    stock = json.loads((tmp_path / "stock.json").read_text())["ready"]
    stocked_pid = stock["mark_delivered"][0]

    # the same three commands through the service, on a parcel of its own
    own = Payloads(plan, tag="own" + dt.datetime.now().strftime("%H%M%S"))
    by_route = {s.route: s for s in plan.sources if s.route}
    pid = own.book.new_id()
    with httpx.Client(base_url=command.url, trust_env=False, timeout=30) as http:
        for route in LIFECYCLE_ROUTES[:3]:
            send = own.command(by_route[route], pid, 0.0)
            assert http.post(send.path, content=send.body, headers=send.headers).status_code == 202
        served = db.collection("parcels").document(pid).get().to_dict()
        stocked = db.collection("parcels").document(stocked_pid).get().to_dict()
        assert shape(stocked) == shape(served)
        assert (stocked["status"], stocked["version"], stocked["eventType"]) == ("out_for_delivery", 3,
                                                                                 "ParcelOutForDelivery")
        served_req = db.collection("command_requests").document(served["lastEvent"]["requestId"]).get().to_dict()
        stocked_req = db.collection("command_requests").document(stocked["lastEvent"]["requestId"]).get().to_dict()
        assert shape(stocked_req) == shape(served_req)

        # the service delivers the stocked parcel: its state machine accepts what was written
        book = Payloads(plan, tag="run").book
        load_stock(book, tmp_path / "stock.json")
        delivered = own.command(by_route["mark_delivered"], book.take("mark_delivered"), 0.0)
        r = http.post(delivered.path, content=delivered.body, headers=delivered.headers)
        assert r.status_code == 202 and r.json()["version"] == 4 and r.json()["status"] == "delivered"
        # a stocked request id replayed with its body is the service's idempotent replay: the
        # stored fingerprint is the one the service computes
        assigned = db.collection("parcels").document(stock["mark_out_for_delivery"][0]).get().to_dict()
        req_id = assigned["lastEvent"]["requestId"]
        body = {"requestId": req_id, "driverId": assigned["driverId"], "vehicleId": assigned["vehicleId"]}
        path = f"/parcels/{assigned['parcelId']}/assign"
        r = http.post(path, json=body, headers={"X-Request-Id": req_id})
        assert r.status_code == 202 and r.headers.get("Idempotent-Replayed") == "true"
        assert r.json()["version"] == 2
        r = http.post(path, json={**body, "driverId": "D9999"}, headers={"X-Request-Id": req_id})
        assert r.status_code == 409  # same id, another body
