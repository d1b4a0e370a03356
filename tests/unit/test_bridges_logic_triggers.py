"""Pure logic of the Firestore trigger bridge."""

from __future__ import annotations

import datetime as dt

from surgesim.emulators.triggers import build_event, classify, partition_bounds, to_plain, wanted


def _partition_of(doc_id, bounds):
    return [i for i, (lo, hi) in enumerate(bounds) if (lo is None or doc_id >= lo) and (hi is None or doc_id < hi)]


def test_partitions_cover_every_id_exactly_once():
    for n in (1, 2, 4, 7):
        bounds = partition_bounds(n)
        assert len(bounds) == n
        for doc_id in ("0", "00af", "9zz", "A", "Zed", "a1", "zzzz", "~odd", "-dash", "é"):
            assert len(_partition_of(doc_id, bounds)) == 1


def test_event_kinds_and_trigger_selection():
    assert classify(None, {"fields": {}}) == "created"
    assert classify({"fields": {}}, {"fields": {}}) == "updated"
    assert classify({"fields": {}}, None) == "deleted"
    assert wanted(["written"], "deleted") == "google.cloud.firestore.document.v1.written"
    assert wanted(["created"], "created") == "google.cloud.firestore.document.v1.created"
    assert wanted(["created"], "updated") is None


def test_cloudevent_headers_and_body():
    new = {"fields": {"status": "ParcelDelivered", "at": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "b": b"\x01"},
           "createTime": "c", "updateTime": "u2"}
    old = {"fields": {"status": "ParcelAssigned"}, "createTime": "c", "updateTime": "u1"}
    headers, body = build_event(project="p", database="(default)", collection="parcels", doc_id="X1",
                                kind="updated", event_type="google.cloud.firestore.document.v1.written",
                                new=new, old=old, update_time="u2")
    assert headers["ce-type"] == "google.cloud.firestore.document.v1.written"
    assert headers["ce-subject"] == "documents/parcels/X1"
    assert headers["ce-source"] == "//firestore.googleapis.com/projects/p/databases/(default)"
    assert headers["ce-time"] == "u2" and headers["ce-specversion"] == "1.0"
    assert body["value"]["name"] == "projects/p/databases/(default)/documents/parcels/X1"
    assert body["value"]["fields"] == {"status": "ParcelDelivered", "at": "2024-01-01T00:00:00Z", "b": "AQ=="}
    assert body["oldValue"]["fields"] == {"status": "ParcelAssigned"}


def test_to_plain_nested():
    assert to_plain({"a": [1, {"b": b"hi"}]}) == {"a": [1, {"b": "aGk="}]}


def test_raw_protobuf_values_read_as_plain_json():
    from google.cloud.firestore_v1 import _helpers

    from surgesim.emulators.triggers import value_to_plain

    when = dt.datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=dt.timezone.utc)
    fields = {"s": "x", "n": 3, "f": 1.5, "b": True, "none": None, "when": when, "raw": b"\x00\x01",
              "nested": {"list": [1, "two", {"deep": False}]}}
    pb = {k: _helpers.encode_value(v)._pb for k, v in fields.items()}
    plain = {k: value_to_plain(v) for k, v in pb.items()}
    assert plain == {"s": "x", "n": 3, "f": 1.5, "b": True, "none": None, "when": "2024-05-01T12:00:00.250000Z",
                     "raw": "AAE=", "nested": {"list": [1, "two", {"deep": False}]}}
    assert plain == to_plain(fields)
