"""The dispatch saga end to end: the workflow runner, the fleet allocator, the command
service and the fakes (route optimiser, SMS) as real processes on the emulators."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from surgesim.services.common.devserver import run_service

pytestmark = pytest.mark.integration

SHIPMENT = {"shipperId": "acme", "recipient": {"name": "Ada", "phone": "+447700900123"},
            "destination": {"lat": 51.5, "lng": -0.12}, "weightKg": 1}


@pytest.fixture(scope="module")
def saga(gcp):
    env = gcp.env_vars()
    tag = uuid.uuid4().hex[:8]
    pub, sub = gcp.clients.publisher(), gcp.clients.subscriber()
    topic_path = pub.topic_path(gcp.project, f"dispatch.requests-{tag}")
    sub_path = sub.subscription_path(gcp.project, f"dispatch-check-{tag}")
    pub.create_topic(name=topic_path)
    sub.create_subscription(name=sub_path, topic=topic_path)
    with run_service("surgesim.services.meridian.allocator:app", env) as allocator, \
            run_service("surgesim.services.meridian.command:app", env) as command, \
            run_service("surgesim.services.fakes.gateway:generic_app", env) as optimiser, \
            run_service("surgesim.services.fakes.gateway:sms_app", env) as sms, \
            run_service("surgesim.services.meridian.dispatch:app", {
                **env, "ALLOCATOR_URL": allocator.url, "COMMAND_URL": command.url, "ROUTE_OPTIMIZER_URL": optimiser.url,
                "SMS_GATEWAY_URL": sms.url, "DISPATCH_TOPIC": f"dispatch.requests-{tag}", "BACKOFF_SCALE": "0.01"}) as runner:
        yield {"allocator": allocator, "command": command, "optimiser": optimiser, "sms": sms, "runner": runner,
               "sub": sub, "sub_path": sub_path}
    sub.delete_subscription(subscription=sub_path)
    pub.delete_topic(topic=topic_path)


def new_parcel(command) -> str:
    r = httpx.post(command.url + "/shipments", json=SHIPMENT, headers={"X-Request-Id": "r-" + uuid.uuid4().hex})
    assert r.status_code == 202
    return r.json()["parcelId"]


def new_vehicle(allocator) -> str:
    vid = "V" + uuid.uuid4().hex[:8]
    assert httpx.put(f"{allocator.url}/vehicles/{vid}", json={"driverId": "D" + vid, "driverPhone": "+447700900555"}).status_code == 200
    return vid


def test_saga_reserves_assigns_and_confirms(gcp, saga):
    vid = new_vehicle(saga["allocator"])
    pid = new_parcel(saga["command"])
    did = "dsp-" + uuid.uuid4().hex[:8]
    httpx.post(saga["sms"].url + "/admin/reset")
    # pin the vehicle: other tests' vehicles may also be available
    r = httpx.post(saga["allocator"].url + "/reservations", json={"dispatchId": did, "vehicleId": vid})
    assert r.status_code == 201
    out = httpx.post(saga["runner"].url + "/executions", json={"dispatchId": did, "parcelId": pid}, timeout=60)
    assert out.status_code == 200 and out.json()["state"] == "succeeded", out.text
    db = gcp.clients.firestore()
    parcel = db.collection("parcels").document(pid).get().to_dict()
    assert parcel["status"] == "assigned" and parcel["vehicleId"] == vid and parcel["driverId"] == "D" + vid
    assert db.collection("vehicles").document(vid).get().get("status") == "reserved"
    assert httpx.get(saga["sms"].url + "/admin/stats").json()["effects"] == 1
    assert db.collection("executions").document(did).get().get("state") == "succeeded"
    # the same execution again changes nothing (every step is idempotent on the dispatch id)
    again = httpx.post(saga["runner"].url + "/executions", json={"dispatchId": did, "parcelId": pid}, timeout=60)
    assert again.json()["state"] == "succeeded"
    assert httpx.get(saga["sms"].url + "/admin/stats").json()["effects"] == 1


def test_failed_step_releases_the_vehicle_and_requeues(gcp, saga):
    vid = new_vehicle(saga["allocator"])
    pid = new_parcel(saga["command"])
    did = "dsp-" + uuid.uuid4().hex[:8]
    httpx.post(saga["allocator"].url + "/reservations", json={"dispatchId": did, "vehicleId": vid})
    httpx.put(saga["optimiser"].url + "/admin/behaviour", json={"outage": True})
    try:
        out = httpx.post(saga["runner"].url + "/executions", json={"dispatchId": did, "parcelId": pid}, timeout=60)
    finally:
        httpx.put(saga["optimiser"].url + "/admin/behaviour", json={"outage": False})
    body = out.json()
    assert out.status_code == 200 and body["state"] == "compensated" and body["failedStep"] == "optimise", body
    assert sum(1 for s in body["trail"] if s["step"] == "optimise") == 3  # 1 try + 2 retries
    db = gcp.clients.firestore()
    assert db.collection("vehicles").document(vid).get().get("status") == "available"
    assert db.collection("parcels").document(pid).get().get("status") == "created"  # never assigned
    got = saga["sub"].pull(subscription=saga["sub_path"], max_messages=10, timeout=10).received_messages
    requeued = [json.loads(m.message.data) for m in got]
    assert [(r["dispatchId"], r["parcelId"], r["requeues"]) for r in requeued] == [(f"{did}-r1", pid, 1)]
    saga["sub"].acknowledge(subscription=saga["sub_path"], ack_ids=[m.ack_id for m in got])


def test_poison_dispatch_request_is_refused(saga):
    r = httpx.post(saga["runner"].url + "/pubsub", json={"message": {"data": "e30=", "messageId": "1"}})
    assert r.status_code == 400
