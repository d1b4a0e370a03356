"""Meridian's command validation and the publisher's CloudEvent handling, without emulators."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient

from surgesim.services.meridian import command, publisher
from surgesim.services.meridian.geofence import crossings, inside

GOOD = {"shipperId": "acme", "recipient": {"name": "Ada", "phone": "+447700900123"},
        "destination": {"lat": 51.5, "lng": -0.1}, "weightKg": 2}


class NoDb:
    def collection(self, name):
        raise AssertionError("an invalid request must not reach Firestore")


@pytest.fixture
def cmd():
    with TestClient(command.build_app(db=NoDb()), raise_server_exceptions=False) as c:
        yield c


READ_AT = dt.datetime(2026, 12, 6, 9, 30, tzinfo=dt.timezone.utc)


class AlwaysRaced:
    """A Firestore stand-in where another instance always writes between read and commit."""

    def __init__(self) -> None:
        self.commits = 0

    def collection(self, name):
        class Ref:
            def __init__(self, doc_id):
                self.path = f"{name}/{doc_id}"
                self._document_path = f"projects/p/databases/(default)/documents/{self.path}"

        class Coll:
            def document(self, doc_id):
                return Ref(doc_id)

        return Coll()

    async def get_all(self, refs):
        for ref in refs:
            parcel = ref.path.startswith("parcels/")
            yield type("Snap", (), {"reference": ref, "exists": parcel, "update_time": READ_AT,
                                    "to_dict": lambda self: {"status": "out_for_delivery", "version": 3}})()

    def batch(self):
        db = self

        class Batch:
            def _add_write_pbs(self, writes):
                for w in writes:
                    if w.update.name.endswith("/parcels/p1"):  # conditional on the update time it read
                        assert w._pb.current_document.update_time.ToDatetime(dt.timezone.utc) == READ_AT

            async def commit(self):
                from google.api_core import exceptions as gexc

                db.commits += 1
                raise gexc.FailedPrecondition("the document changed since it was read")

        return Batch()


def test_a_command_that_keeps_losing_the_race_answers_503_after_every_attempt(monkeypatch):
    monkeypatch.setenv("COMMAND_TXN_ATTEMPTS", "3")
    db = AlwaysRaced()
    with TestClient(command.build_app(db=db), raise_server_exceptions=False) as c:
        r = c.post("/parcels/p1/delivered", json={"signedBy": "Ada"}, headers={"X-Request-Id": "r1"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert db.commits == 3


@pytest.mark.parametrize("path,body,needle", [
    ("/shipments", {**GOOD, "weightKg": -1}, "weightKg"),
    ("/shipments", {**GOOD, "recipient": {"name": "Ada", "phone": "0770"}}, "recipient.phone"),
    ("/shipments", {**GOOD, "destination": {"lat": 91, "lng": 0}}, "destination.lat"),
    ("/shipments", {**GOOD, "surprise": 1}, "surprise"),
    ("/shipments", {k: v for k, v in GOOD.items() if k != "shipperId"}, "shipperId"),
    ("/parcels/p1/assign", {"driverId": "d1"}, "vehicleId"),
    ("/parcels/bad%20id/assign", {"driverId": "d1", "vehicleId": "v1"}, "parcel_id"),
    ("/parcels/p1/delivered", {"deliveredAt": "yesterday"}, "deliveredAt"),
])
def test_bad_commands_are_400_with_the_field_named(cmd, path, body, needle):
    r = cmd.post(path, json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"]


def test_malformed_json_and_bad_request_id_are_400(cmd):
    assert cmd.post("/shipments", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert cmd.post("/shipments", json=GOOD, headers={"X-Request-Id": "has spaces"}).status_code == 400


def test_price_is_base_plus_weight():
    from surgesim.services.meridian.model import price_cents

    assert price_cents(3.5) == 850 and price_cents(0.1) == 510


class FakePublisher:
    def __init__(self):
        self.sent = []

    def publish(self, topic, data, **attrs):
        self.sent.append((topic, json.loads(data), attrs))
        f = cf.Future()
        f.set_result(str(len(self.sent)))
        return f


CE = {"ce-id": "1", "ce-source": "//firestore.googleapis.com/projects/p/databases/(default)",
      "ce-type": "google.cloud.firestore.document.v1.written", "ce-specversion": "1.0",
      "content-type": "application/protobuf"}
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
NAME = "projects/p/databases/(default)/documents/parcels/p1"


def _doc(fields: dict):
    from google.cloud.firestore_v1 import _helpers
    from google.events.cloud import firestore as fs_events

    doc = fs_events.Document.pb()(name=NAME)
    for k, v in fields.items():
        doc.fields[k].MergeFromString(_helpers.encode_value(v)._pb.SerializeToString())
    return doc


def change(event_id="e1", old_id=None, *, value=True, **fields):
    """A DocumentEventData (google-events, raw protobuf) as Eventarc sends it."""
    from google.events.cloud import firestore as fs_events

    new = {"parcelId": "p1", "status": "delivered", "driverId": "d1", "version": 3,
           "lastEvent": {"type": "ParcelDelivered", "id": event_id, "traceparent": TP,
                         "at": dt.datetime(2026, 12, 6, 9, 30, tzinfo=dt.timezone.utc)}, **fields}
    data = fs_events.DocumentEventData.pb()()
    if value:
        data.value.CopyFrom(_doc(new))
    if old_id or not value:
        data.old_value.CopyFrom(_doc({**new, "lastEvent": {**new["lastEvent"], "id": old_id}}))
    return data


def test_publisher_binary_protobuf_json_and_structured_modes():
    from google.protobuf import json_format

    pub = FakePublisher()
    with TestClient(publisher.build_app(pub)) as c:
        assert c.post("/", content=change().SerializeToString(), headers=CE).status_code == 200
        structured = {**{k[3:]: v for k, v in CE.items() if k.startswith("ce-")},
                      "datacontenttype": "application/protobuf",
                      "data_base64": base64.b64encode(change("e2").SerializeToString()).decode()}
        r = c.post("/", content=json.dumps(structured), headers={"content-type": "application/cloudevents+json"})
        assert r.status_code == 200 and r.json()["eventId"] == "e2"
        as_json = json_format.MessageToJson(change("e3"))
        r = c.post("/", content=as_json, headers={**CE, "content-type": "application/json"})
        assert r.status_code == 200 and r.json()["eventId"] == "e3"
    (topic, data, attrs), (_, data2, _), (_, data3, _) = pub.sent
    assert topic.endswith("/topics/logistics.events")
    assert attrs["eventType"] == "ParcelDelivered" and attrs["parcelId"] == "p1" and attrs["eventId"] == "e1"
    assert attrs["driverId"] == "d1" and attrs["traceparent"].split("-")[1] == TP.split("-")[1]
    assert data["parcel"]["status"] == "delivered" and "lastEvent" not in data["parcel"] and data2["eventId"] == "e2"
    assert data["version"] == 3 and data["occurredAt"] == "2026-12-06T09:30:00Z" and data3["eventId"] == "e3"


def test_publisher_skips_non_events_and_refuses_garbage():
    pub = FakePublisher()
    with TestClient(publisher.build_app(pub)) as c:
        same = change("e1", old_id="e1").SerializeToString()
        assert c.post("/", content=same, headers=CE).json()["status"] == "no event in this change"
        deleted = change(value=False).SerializeToString()
        assert c.post("/", content=deleted, headers=CE).json()["status"] == "no event in this change"
        assert c.post("/", content=b"\xff\xff garbage", headers=CE).status_code == 400
        plain_json = json.dumps({"value": {"name": NAME, "fields": {"status": "x"}}})  # not DocumentEventData
        assert c.post("/", content=plain_json, headers={**CE, "content-type": "application/json"}).status_code == 400
        good = change().SerializeToString()
        assert c.post("/", content=good, headers={**CE, "ce-type": "com.example.other"}).status_code == 400
        assert c.post("/", content=good, headers={k: v for k, v in CE.items() if k != "ce-id"}).status_code == 400
    assert pub.sent == []


def test_crossings_of_polygons_and_first_sighting():
    square = {"id": "sq", "polygon": [[0, 0], [0, 1], [1, 1], [1, 0]]}
    state, events = crossings([square], None, 0.5, 0.5)
    assert state == {"sq"} and events == []  # the first ping only records
    state, events = crossings([square], state, 2, 2)
    assert events == [("sq", "exited")]


def test_circle_fence():
    fence = {"id": "c", "circle": {"lat": 51.5, "lng": -0.1, "radius_m": 200}}
    assert inside(fence, 51.5010, -0.1) and not inside(fence, 51.5020, -0.1)
