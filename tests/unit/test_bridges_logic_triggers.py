"""Pure logic of the Firestore trigger bridge: the event Eventarc would send, read back the
way Google's samples read it (google-events' DocumentEventData from the protobuf body)."""

from __future__ import annotations

import datetime as dt
import json

from google.cloud.firestore_v1 import _helpers
from google.events.cloud import firestore as fs_events

from surgesim.emulators.triggers import (
    build_event,
    changed_fields,
    classify,
    partition_bounds,
    path_matcher,
    wanted,
)
from surgesim.services.common import cloudevents

WHEN = dt.datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=dt.timezone.utc)


def _partition_of(doc_id, bounds):
    return [i for i, (lo, hi) in enumerate(bounds) if (lo is None or doc_id >= lo) and (hi is None or doc_id < hi)]


def _doc(name: str, fields: dict, updated: dt.datetime = WHEN):
    """A google-events Document (raw protobuf) with these fields."""
    doc = fs_events.Document.pb()(name=name)
    for k, v in fields.items():
        doc.fields[k].MergeFromString(_helpers.encode_value(v)._pb.SerializeToString())
    doc.update_time.FromDatetime(updated)
    return doc


def test_partitions_cover_every_id_exactly_once():
    for n in (1, 2, 4, 7):
        bounds = partition_bounds(n)
        assert len(bounds) == n
        for doc_id in ("0", "00af", "9zz", "A", "Zed", "a1", "zzzz", "~odd", "-dash", "é"):
            assert len(_partition_of(doc_id, bounds)) == 1


def test_event_kinds_and_trigger_selection():
    assert classify(None, object()) == "created"
    assert classify(object(), object()) == "updated"
    assert classify(object(), None) == "deleted"
    assert wanted(["written"], "deleted") == "google.cloud.firestore.document.v1.written"
    assert wanted(["created"], "created") == "google.cloud.firestore.document.v1.created"
    assert wanted(["created"], "updated") is None


def test_path_patterns_as_eventarc_matches_them():
    one = path_matcher("parcels/{parcelId}")
    assert one("parcels/P1") and not one("parcels/P1/scans/S1") and not one("vehicles/V1")
    assert path_matcher("parcels/P1")("parcels/P1") and not path_matcher("parcels/P1")("parcels/P2")
    deep = path_matcher("parcels/{p}/scans/{s}")
    assert deep("parcels/P1/scans/S1") and not deep("parcels/P1")
    anything = path_matcher("parcels/{doc=**}")
    assert anything("parcels/P1") and anything("parcels/P1/scans/S1") and not anything("parcelsX/P1")


def test_update_mask_lists_changed_added_and_removed_fields():
    old = _doc("n", {"status": "a", "same": 1, "gone": True})
    new = _doc("n", {"status": "b", "same": 1, "added": "x"})
    assert changed_fields(old, new) == ["added", "gone", "status"]


def test_protobuf_body_parses_as_googles_sample_parses_it():
    name = "projects/p/databases/(default)/documents/parcels/X1"
    new = _doc(name, {"status": "ParcelDelivered", "at": WHEN, "b": b"\x01", "nested": {"list": [1, "two", None]}})
    old = _doc(name, {"status": "ParcelAssigned"})
    headers, body = build_event(project="p", database="(default)", document="parcels/X1",
                                event_type="google.cloud.firestore.document.v1.written", new=new, old=old,
                                update_time="2024-05-01T12:00:00.250000Z")
    assert headers["content-type"] == "application/protobuf"
    assert headers["ce-type"] == "google.cloud.firestore.document.v1.written"
    assert headers["ce-subject"] == "documents/parcels/X1" and headers["ce-document"] == "parcels/X1"
    assert headers["ce-source"] == "//firestore.googleapis.com/projects/p/databases/(default)"
    assert headers["ce-database"] == "(default)" and headers["ce-namespace"] == "(default)"
    assert headers["ce-time"] == "2024-05-01T12:00:00.250000Z" and headers["ce-specversion"] == "1.0"
    # exactly what python-docs-samples' hello_firestore does with cloud_event.data
    payload = fs_events.DocumentEventData()
    payload._pb.ParseFromString(body)
    assert payload.value.name == name
    assert payload.value.fields["status"].string_value == "ParcelDelivered"
    assert payload.old_value.fields["status"].string_value == "ParcelAssigned"
    assert list(payload.update_mask.field_paths) == ["at", "b", "nested", "status"]
    assert cloudevents.fields(payload._pb.value) == {
        "status": "ParcelDelivered", "at": "2024-05-01T12:00:00.250000Z", "b": "AQ==",
        "nested": {"list": [1, "two", None]}}


def test_created_and_deleted_carry_one_side_and_no_mask():
    name = "projects/p/databases/(default)/documents/parcels/X1"
    _, created = build_event(project="p", database="(default)", document="parcels/X1", event_type="t",
                             new=_doc(name, {"n": 1}), old=None, update_time=None)
    _, deleted = build_event(project="p", database="(default)", document="parcels/X1", event_type="t",
                             new=None, old=_doc(name, {"n": 1}), update_time=None)
    c, d = fs_events.DocumentEventData.deserialize(created), fs_events.DocumentEventData.deserialize(deleted)
    assert "value" in c and "old_value" not in c and not c.update_mask.field_paths
    assert "old_value" in d and "value" not in d


def test_json_encoding_is_the_proto3_json_form():
    name = "projects/p/databases/(default)/documents/parcels/X1"
    headers, body = build_event(project="p", database="(default)", document="parcels/X1", event_type="t",
                                new=_doc(name, {"n": 2}), old=_doc(name, {"n": 1}), update_time=None,
                                encoding="json")
    assert headers["content-type"] == "application/json"
    data = json.loads(body)
    assert data["value"]["fields"] == {"n": {"integerValue": "2"}}
    assert data["oldValue"]["fields"] == {"n": {"integerValue": "1"}} and data["updateMask"] == {"fieldPaths": ["n"]}
    assert cloudevents.fields(cloudevents.document_event(body, "application/json").value) == {"n": 2}
