"""Meridian's services as real processes (uvicorn on free ports) against the real
emulators (the session fixture `gcp`) and the fake gateways as real HTTP servers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest

from surgesim.services.common.devserver import run_service
from surgesim.services.common.pubsub_push import make_envelope

pytestmark = pytest.mark.integration

SHIPMENT = {
    "shipperId": "acme",
    "recipient": {"name": "Ada", "phone": "+447700900123"},
    "destination": {"lat": 51.5072, "lng": -0.1276, "address": "1 Strand"},
    "origin": {"lat": 51.45, "lng": -0.2},
    "weightKg": 3.5,
}


@pytest.fixture(scope="module")
def env(gcp):
    return gcp.env_vars()


@pytest.fixture(scope="module")
def command(env):
    with run_service("surgesim.services.meridian.command:app", env) as svc:
        yield svc


@pytest.fixture(scope="module")
def sms(env):
    with run_service("surgesim.services.fakes.gateway:sms_app", env) as svc:
        yield svc


@pytest.fixture(scope="module")
def billing_api(env):
    with run_service("surgesim.services.fakes.gateway:billing_app", env) as svc:
        yield svc


@pytest.fixture(scope="module")
def notification(env, sms):
    with run_service("surgesim.services.meridian.reactors:notification_app", {**env, "SMS_GATEWAY_URL": sms.url}) as svc:
        yield svc


def rid() -> str:
    return "req-" + uuid.uuid4().hex


def deliver_parcel(command) -> tuple[str, dict]:
    """Create, assign, dispatch and deliver a parcel through the HTTP API; the last answer."""
    r = httpx.post(command.url + "/shipments", json=SHIPMENT, headers={"X-Request-Id": rid()})
    assert r.status_code == 202, r.text
    pid = r.json()["parcelId"]
    for path, body in (("assign", {"driverId": "drv-7", "vehicleId": "veh-42"}), ("out-for-delivery", None)):
        r = httpx.post(f"{command.url}/parcels/{pid}/{path}", json=body, headers={"X-Request-Id": rid()})
        assert r.status_code == 202, r.text
    r = httpx.post(f"{command.url}/parcels/{pid}/delivered", json={"signedBy": "Ada"}, headers={"X-Request-Id": "d-" + pid})
    assert r.status_code == 202, r.text
    return pid, r.json()


def parcel_event(gcp, pid: str) -> dict:
    """The event the publisher would emit for the parcel's current document."""
    doc = gcp.clients.firestore().collection("parcels").document(pid).get().to_dict()
    last = doc["lastEvent"]
    parcel = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in doc.items() if k != "lastEvent"}
    return {"eventId": last["id"], "eventType": last["type"], "parcelId": pid, "parcel": parcel}


def envelope_for(event: dict, **extra_attrs) -> dict:
    attrs = {"eventType": event["eventType"], "parcelId": event["parcelId"], "eventId": event["eventId"], **extra_attrs}
    return make_envelope(event, attrs, message_id=str(uuid.uuid4().int % 10**15))


def test_mark_delivered_answers_202_and_changes_the_parcel(gcp, command):
    pid, answer = deliver_parcel(command)
    assert answer["status"] == "delivered" and answer["version"] == 4 and answer["eventType"] == "ParcelDelivered"
    doc = gcp.clients.firestore().collection("parcels").document(pid).get().to_dict()
    assert doc["status"] == "delivered" and doc["version"] == 4 and doc["signedBy"] == "Ada"
    assert doc["lastEvent"]["type"] == "ParcelDelivered" and doc["lastEvent"]["id"] == answer["eventId"]
    assert doc["lastEvent"]["traceparent"].startswith("00-")


def test_retried_request_is_a_no_op_with_the_same_answer(gcp, command):
    pid, first = deliver_parcel(command)
    before = gcp.clients.firestore().collection("parcels").document(pid).get()
    again = httpx.post(f"{command.url}/parcels/{pid}/delivered", json={"signedBy": "Ada"}, headers={"X-Request-Id": "d-" + pid})
    assert again.status_code == 202 and again.json() == first
    assert again.headers.get("idempotent-replayed") == "true"
    after = gcp.clients.firestore().collection("parcels").document(pid).get()
    assert after.update_time == before.update_time  # nothing written
    # a different request under the same id is refused, a new id for an illegal transition too
    reused = httpx.post(f"{command.url}/parcels/{pid}/delivered", json={"signedBy": "Eve"}, headers={"X-Request-Id": "d-" + pid})
    assert reused.status_code == 409
    twice = httpx.post(f"{command.url}/parcels/{pid}/delivered", json={"signedBy": "Ada"}, headers={"X-Request-Id": rid()})
    assert twice.status_code == 409 and "delivered" in twice.json()["error"]


def test_concurrent_retries_of_one_request_create_one_parcel(gcp, command):
    request_id = rid()

    async def burst():
        # contended transactions queue on the emulator's document lock: allow them time
        async with httpx.AsyncClient(trust_env=False, timeout=60) as http:
            return await asyncio.gather(*[
                http.post(command.url + "/shipments", json=SHIPMENT, headers={"X-Request-Id": request_id}) for _ in range(10)
            ])

    t0 = time.monotonic()
    answers = asyncio.run(burst())
    print(f"10 concurrent retries answered in {time.monotonic() - t0:.2f}s:", sorted(r.status_code for r in answers))
    ok = [r for r in answers if r.status_code == 202]
    assert len(ok) == len(answers)  # one instance queues them per parcel instead of aborting
    assert sum(1 for r in answers if r.headers.get("idempotent-replayed") != "true") == 1
    assert len({r.json()["eventId"] for r in ok}) == 1
    pid = ok[0].json()["parcelId"]
    assert gcp.clients.firestore().collection("parcels").document(pid).get().get("version") == 1


def test_a_new_shipment_on_a_taken_parcel_id_is_409_and_its_own_retry_a_replay(gcp, command):
    """Creates commit without reading first; the commit's preconditions must still tell a
    retry (replayed) from a different request for the same parcel id (409)."""
    pid, first_id = "p-" + uuid.uuid4().hex, rid()
    first = httpx.post(command.url + "/shipments", json={**SHIPMENT, "parcelId": pid}, headers={"X-Request-Id": first_id})
    assert first.status_code == 202 and first.headers.get("idempotent-replayed") is None, first.text
    other = httpx.post(command.url + "/shipments", json={**SHIPMENT, "parcelId": pid}, headers={"X-Request-Id": rid()})
    assert other.status_code == 409 and "already exists" in other.json()["error"]
    again = httpx.post(command.url + "/shipments", json={**SHIPMENT, "parcelId": pid}, headers={"X-Request-Id": first_id})
    assert again.status_code == 202 and again.headers.get("idempotent-replayed") == "true" and again.json() == first.json()
    assert gcp.clients.firestore().collection("parcels").document(pid).get().get("version") == 1


def test_two_instances_racing_on_one_parcel_lose_no_update(gcp, env, command):
    """Two instances (processes) of the command service: nothing but the commit's
    preconditions orders their commands on one parcel."""
    pids = []
    for _ in range(6):
        r = httpx.post(command.url + "/shipments", json=SHIPMENT, headers={"X-Request-Id": rid()})
        assert r.status_code == 202, r.text
        pids.append(r.json()["parcelId"])

    async def race(urls, path, body):
        async with httpx.AsyncClient(trust_env=False, timeout=60) as http:
            return await asyncio.gather(*[
                http.post(f"{url}/parcels/{pid}/{path}", json=body, headers={"X-Request-Id": rid()})
                for pid in pids for url in urls])

    with run_service("surgesim.services.meridian.command:app", env) as second:
        urls = [command.url, second.url]
        # assign is allowed again from assigned: both must apply, one after the other
        assigned = asyncio.run(race(urls, "assign", {"driverId": "drv-1", "vehicleId": "veh-1"}))
        assert [r.status_code for r in assigned] == [202] * len(assigned), [r.text for r in assigned if r.status_code != 202]
        for pid, pair in zip(pids, zip(assigned[::2], assigned[1::2])):
            assert sorted(r.json()["version"] for r in pair) == [2, 3]
            assert gcp.clients.firestore().collection("parcels").document(pid).get().get("version") == 3
        for pid in pids:
            r = httpx.post(f"{command.url}/parcels/{pid}/out-for-delivery", headers={"X-Request-Id": rid()})
            assert r.status_code == 202, r.text
        # delivered only from out_for_delivery: exactly one of the two wins
        delivered = asyncio.run(race(urls, "delivered", {"signedBy": "Ada"}))
    for pid, pair in zip(pids, zip(delivered[::2], delivered[1::2])):
        assert sorted(r.status_code for r in pair) == [202, 409], [r.text for r in pair]
        won = next(r for r in pair if r.status_code == 202).json()
        doc = gcp.clients.firestore().collection("parcels").document(pid).get().to_dict()
        assert doc["version"] == 5 and won["version"] == 5 and doc["lastEvent"]["id"] == won["eventId"]


def _event_data(name: str, new: dict, old: dict) -> bytes:
    """A DocumentEventData protobuf (google-events) of a change from old to new, as Eventarc sends it."""
    from google.cloud.firestore_v1 import _helpers
    from google.events.cloud import firestore as fs_events

    data = fs_events.DocumentEventData.pb()()
    for side, fields in ((data.value, new), (data.old_value, old)):
        side.name = name
        for k, v in fields.items():
            side.fields[k].MergeFromString(_helpers.encode_value(v)._pb.SerializeToString())
    return data.SerializeToString()


def test_publisher_turns_the_document_change_into_a_typed_event(gcp, env, command):
    topic = f"logistics.events-{uuid.uuid4().hex[:8]}"
    pub, sub = gcp.clients.publisher(), gcp.clients.subscriber()
    topic_path = pub.topic_path(gcp.project, topic)
    sub_path = sub.subscription_path(gcp.project, topic + "-check")
    pub.create_topic(name=topic_path)
    sub.create_subscription(name=sub_path, topic=topic_path)
    pid, answer = deliver_parcel(command)
    doc = gcp.clients.firestore().collection("parcels").document(pid).get().to_dict()
    old = {**doc, "lastEvent": {**doc["lastEvent"], "id": "previous"}}
    name = f"projects/{gcp.project}/databases/(default)/documents/parcels/{pid}"
    headers = {"ce-id": str(uuid.uuid4()), "ce-source": f"//firestore.googleapis.com/projects/{gcp.project}/databases/(default)",
               "ce-type": "google.cloud.firestore.document.v1.written", "ce-specversion": "1.0",
               "ce-subject": f"documents/parcels/{pid}", "content-type": "application/protobuf"}
    body = _event_data(name, doc, old)
    unchanged = _event_data(name, doc, doc)
    with run_service("surgesim.services.meridian.publisher:app", {**env, "EVENT_TOPIC": topic}) as svc:
        r = httpx.post(svc.url + "/", content=body, headers=headers)
        assert r.status_code == 200 and r.json()["status"] == "published", r.text
        assert httpx.post(svc.url + "/", content=unchanged, headers=headers).json()["status"] == "no event in this change"
        assert httpx.post(svc.url + "/", content=b"\xff", headers=headers).status_code == 400  # not DocumentEventData
        log = svc.log()
    got = sub.pull(subscription=sub_path, max_messages=10, timeout=10).received_messages
    assert len(got) == 1
    msg = got[0].message
    assert msg.attributes["eventType"] == "ParcelDelivered" and msg.attributes["parcelId"] == pid
    assert msg.attributes["eventId"] == answer["eventId"]
    trace_id = doc["lastEvent"]["traceparent"].split("-")[1]
    assert msg.attributes["traceparent"].split("-")[1] == trace_id  # the command's trace travels on
    data = json.loads(msg.data)
    assert data["parcel"]["recipient"]["phone"] == "+447700900123" and data["parcel"]["priceCents"] == 850
    assert f"traces/{trace_id}" in log  # the publisher's JSON log line carries the same trace
    sub.delete_subscription(subscription=sub_path)
    pub.delete_topic(topic=topic_path)


def _stats(fake) -> dict:
    return httpx.get(fake.url + "/admin/stats").json()


def test_thousand_deliveries_of_one_envelope_text_the_recipient_once(gcp, command, sms, notification):
    httpx.post(sms.url + "/admin/reset")
    httpx.put(sms.url + "/admin/behaviour", json={"latency_p50_ms": 50, "latency_p99_ms": 150})
    pid, _ = deliver_parcel(command)
    envelope = envelope_for(parcel_event(gcp, pid))

    async def flood():
        sem = asyncio.Semaphore(25)
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            async def one():
                async with sem:
                    return (await http.post(notification.url + "/pubsub", json=envelope)).status_code
            return await asyncio.gather(*[one() for _ in range(1000)])

    t0 = time.monotonic()
    try:
        codes = asyncio.run(flood())
        print(f"1,000 deliveries in {time.monotonic() - t0:.1f}s:", {c: codes.count(c) for c in sorted(set(codes))})
    finally:
        httpx.put(sms.url + "/admin/behaviour", json={"latency_p50_ms": 0, "latency_p99_ms": None})
    assert set(codes) <= {200, 503}, sorted(set(codes))
    assert codes.count(200) >= 1
    stats = _stats(sms)
    assert stats["calls"] == 1 and stats["effects"] == 1 and stats["unique_keys"] == 1
    # and a late redelivery is acked without a call
    late = httpx.post(notification.url + "/pubsub", json=envelope)
    assert late.status_code == 200 and late.json()["status"] == "duplicate"
    assert _stats(sms)["calls"] == 1


def test_a_failed_call_is_retried_on_redelivery_with_the_same_key(gcp, command, sms, notification):
    httpx.post(sms.url + "/admin/reset")
    pid, _ = deliver_parcel(command)
    envelope = envelope_for(parcel_event(gcp, pid))
    httpx.put(sms.url + "/admin/behaviour", json={"outage": True})
    try:
        first = httpx.post(notification.url + "/pubsub", json=envelope)
    finally:
        httpx.put(sms.url + "/admin/behaviour", json={"outage": False})
    assert first.status_code == 503  # nack: Pub/Sub redelivers
    second = httpx.post(notification.url + "/pubsub", json=envelope)
    assert second.status_code == 200 and second.json()["status"] == "handled"
    stats = _stats(sms)
    assert stats["calls"] == 2 and stats["effects"] == 1 and stats["outage_rejections"] == 1
    assert list(stats["per_key"].values()) == [2]  # both attempts carried the same idempotency key


def test_poison_messages_are_refused_the_same_way_every_time(sms, notification):
    httpx.post(sms.url + "/admin/reset")
    marked = make_envelope({"eventType": "ParcelDelivered"}, {"eventType": "ParcelDelivered", "poison": "true"}, "p1")
    garbage = make_envelope(b"\xff\x00not json", {"eventType": "ParcelDelivered"}, "p2")
    broken = {"message": {"data": "!!!not-base64", "messageId": "p3"}}
    for env_ in (marked, garbage, broken, {"hello": "world"}):
        codes = {httpx.post(notification.url + "/pubsub", json=env_).status_code for _ in range(5)}
        assert codes == {400}
    assert httpx.post(notification.url + "/pubsub", content=b"not json at all").status_code == 400
    assert _stats(sms)["calls"] == 0


def test_billing_charges_once_and_writes_the_invoice(gcp, env, command, billing_api):
    httpx.post(billing_api.url + "/admin/reset")
    pid, _ = deliver_parcel(command)
    event = parcel_event(gcp, pid)
    with run_service("surgesim.services.meridian.reactors:billing_app", {**env, "BILLING_API_URL": billing_api.url}) as svc:
        codes = [httpx.post(svc.url + "/pubsub", json=envelope_for(event)).status_code for _ in range(3)]
        # the publisher may publish one event twice: new messageId, same eventId
        assert codes == [200, 200, 200]
    stats = _stats(billing_api)
    assert stats["calls"] == 1 and stats["effects"] == 1
    invoice = gcp.clients.firestore().collection("invoices").document(pid).get().to_dict()
    assert invoice["amountCents"] == 850 and invoice["chargeId"].startswith("ch_")


def test_bad_deploy_fails_only_matching_messages(gcp, env, command):
    pid, _ = deliver_parcel(command)
    event = parcel_event(gcp, pid)
    bad = 'attributes.eventType = "ParcelDelivered"'
    with run_service("surgesim.services.meridian.reactors:pod_app", {**env, "BAD_PATTERN": bad}) as svc:
        assert httpx.post(svc.url + "/pubsub", json=envelope_for(event)).status_code == 500
        other = {**event, "eventType": "ParcelOutForDelivery"}
        r = httpx.post(svc.url + "/pubsub", json=envelope_for(other))
        assert r.status_code == 200 and r.json()["status"] == "ignored"
        assert "bad deploy" in svc.log()
    with run_service("surgesim.services.meridian.reactors:pod_app", env) as svc:
        assert httpx.post(svc.url + "/pubsub", json=envelope_for(event)).status_code == 200
    assert gcp.clients.firestore().collection("pods").document(pid).get().get("signedBy") == "Ada"


def test_driver_scoring_counts_each_event_once(gcp, env, command):
    pid, _ = deliver_parcel(command)
    event = parcel_event(gcp, pid)
    driver = f"drv-{uuid.uuid4().hex[:6]}"
    event["parcel"]["driverId"] = driver
    with run_service("surgesim.services.meridian.reactors:driver_scoring_app", env) as svc:
        for _ in range(3):
            assert httpx.post(svc.url + "/pubsub", json=envelope_for(event)).status_code == 200
    doc = gcp.clients.firestore().collection("drivers").document(driver).get().to_dict()
    assert doc["deliveries"] == 1 and doc["score"] == 10


def test_eta_publishes_route_eta_updated(gcp, env, command):
    topic = f"logistics.events-{uuid.uuid4().hex[:8]}"
    pub, sub = gcp.clients.publisher(), gcp.clients.subscriber()
    topic_path, sub_path = pub.topic_path(gcp.project, topic), sub.subscription_path(gcp.project, topic + "-eta")
    pub.create_topic(name=topic_path)
    sub.create_subscription(name=sub_path, topic=topic_path)
    r = httpx.post(command.url + "/shipments", json=SHIPMENT, headers={"X-Request-Id": rid()})
    pid = r.json()["parcelId"]
    httpx.post(f"{command.url}/parcels/{pid}/assign", json={"driverId": "d", "vehicleId": "v"}, headers={"X-Request-Id": rid()})
    event = parcel_event(gcp, pid)
    tp = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    with run_service("surgesim.services.meridian.reactors:eta_app", {**env, "EVENT_TOPIC": topic}) as svc:
        r = httpx.post(svc.url + "/pubsub", json=envelope_for(event, traceparent=tp))
        assert r.status_code == 200 and r.json()["result"] == {"published": 1}, r.text
    got = sub.pull(subscription=sub_path, max_messages=10, timeout=10).received_messages
    assert [m.message.attributes["eventType"] for m in got] == ["RouteEtaUpdated"]
    assert got[0].message.attributes["traceparent"].split("-")[1] == "ab" * 16
    assert json.loads(got[0].message.data)["parcelId"] == pid
    sub.delete_subscription(subscription=sub_path)
    pub.delete_topic(topic=topic_path)
