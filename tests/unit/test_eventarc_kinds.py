"""The three Eventarc trigger kinds in the system file, and the CloudEvents the Pub/Sub and
Storage bridges build (what Eventarc sends), without emulators."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from surgesim.emulators.push import build_message_published
from surgesim.emulators.storage_triggers import build_event, diff
from surgesim.live import functions
from surgesim.schema import System
from surgesim.schema.loading import system_problems
from surgesim.schema.system import Trigger


def test_trigger_kind_follows_its_source_with_kind_defaults():
    fs = Trigger.model_validate({"name": "t", "target": "s", "document": "parcels/{parcelId}"})
    assert fs.kind == "firestore" and fs.collection == "parcels" and fs.events == ["written"]
    assert fs.event_type == "google.cloud.firestore.document.v1.written" and fs.encoding == "protobuf"
    short = Trigger.model_validate({"name": "t", "target": "s", "collection": "parcels"})
    assert short.document == "parcels/{docId}"
    ps = Trigger.model_validate({"name": "orders", "target": "s", "topic": "orders"})
    assert ps.kind == "pubsub" and ps.event_type == "google.cloud.pubsub.topic.v1.messagePublished"
    assert ps.subscription == "eventarc-orders-sub" and ps.retry.min_backoff == 10 and ps.retry.max_backoff == 600
    st = Trigger.model_validate({"name": "t", "target": "s", "bucket": "b1", "events": ["finalized", "deleted"]})
    assert st.kind == "storage" and st.event_types[1] == "google.cloud.storage.object.v1.deleted"


@pytest.mark.parametrize("bad, says", [
    ({"topic": "orders", "bucket": "b"}, "exactly one source"),
    ({}, "exactly one source"),
    ({"bucket": "b", "events": ["written"]}, "events of a storage trigger"),
    ({"topic": "orders", "events": ["finalized"]}, "events of a pubsub trigger"),
    ({"collection": "parcels", "document": "vehicles/{v}"}, "is not in collection"),
    ({"document": "parcels"}, "document"),
    ({"bucket": "b", "dead_letter": {"topic": "orders.dlq"}}, "dead_letter is for Pub/Sub"),
    ({"collection": "parcels", "encoding": "xml"}, "encoding"),
])
def test_bad_triggers_name_what_is_wrong(bad, says):
    with pytest.raises(ValidationError) as err:
        Trigger.model_validate({"name": "t", "target": "s", **bad})
    assert says in str(err.value)


def test_trigger_sources_must_be_declared():
    system = System.model_validate({"name": "x", "services": [{"name": "s"}], "triggers": [
        {"name": "a", "topic": "nope", "target": "s"}, {"name": "b", "bucket": "nobucket", "target": "s"}]})
    problems = {loc[1:]: msg for loc, msg in system_problems(system)}
    assert "topic 'nope' is not declared" in problems[(0, "topic")]
    assert "bucket 'nobucket' is not declared" in problems[(1, "bucket")]


def test_function_is_a_third_way_to_run_a_service():
    fn = {"source": "examples/functions/firestore_hello", "target": "hello_firestore", "signature": "cloudevent"}
    System.model_validate({"name": "x", "services": [{"name": "s", "function": fn}]})
    with pytest.raises(ValidationError, match="not command and function"):
        System.model_validate({"name": "x", "services": [{"name": "s", "function": fn, "command": ["x"]}]})


def test_function_env_adds_the_framework_and_is_keyed_by_requirements(tmp_path, monkeypatch):
    from surgesim.emulators import tool_env

    monkeypatch.setenv("SURGESIM_TOOLS", str(tmp_path / "tools"))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "requirements.txt").write_text("# c\ngoogle-events==0.14.0  # pinned\n")
    (b / "requirements.txt").write_text("Functions_Framework>=3\n")
    assert functions.requirements(a) == ["google-events==0.14.0", "functions-framework"]
    assert functions.requirements(b) == ["Functions_Framework>=3"]
    env_a = tool_env.env_path("function", tuple(functions.requirements(a)))
    assert env_a != tool_env.env_path("function", tuple(functions.requirements(b)))
    assert env_a.parent == tmp_path / "tools"


def test_message_published_is_the_push_envelope_as_a_cloudevent():
    received = {"ackId": "a", "deliveryAttempt": 2, "message": {
        "data": base64.b64encode(b"hi").decode(), "attributes": {"k": "v"}, "messageId": "42",
        "publishTime": "2026-12-07T01:02:03.456Z"}}
    headers, body = build_message_published(received, "projects/p/subscriptions/eventarc-t-sub", "projects/p/topics/orders")
    assert headers["ce-type"] == "google.cloud.pubsub.topic.v1.messagePublished" and headers["ce-id"] == "42"
    assert headers["ce-source"] == "//pubsub.googleapis.com/projects/p/topics/orders"
    assert headers["ce-time"] == "2026-12-07T01:02:03.456Z" and headers["content-type"] == "application/json"
    data = json.loads(body)
    assert data["subscription"] == "projects/p/subscriptions/eventarc-t-sub" and "deliveryAttempt" not in data
    assert base64.b64decode(data["message"]["data"]) == b"hi" and data["message"]["attributes"] == {"k": "v"}
    assert data["message"]["messageId"] == data["message"]["message_id"] == "42"


def _obj(name, gen="1", meta="1", **extra):
    return {"bucket": "b", "name": name, "generation": gen, "metageneration": meta, "size": "3",
            "updated": "2026-12-07T00:00:00Z", "timeCreated": "2026-12-07T00:00:00Z", **extra}


def test_storage_listing_differences_are_eventarc_object_events():
    before = {"a": _obj("a"), "b": _obj("b"), "c": _obj("c")}
    after = {"a": _obj("a", gen="2"), "b": _obj("b", meta="2"), "d": _obj("d")}
    got = sorted((kind, obj["name"]) for kind, obj in diff(before, after))
    assert got == [("deleted", "c"), ("finalized", "a"), ("finalized", "d"), ("metadataUpdated", "b")]
    assert diff(after, after) == []


def test_storage_event_headers_and_object_data():
    headers, body = build_event("finalized", _obj("sightings/x y.jpg", gen="17", acl=[], contentType="image/jpeg"))
    assert headers["ce-type"] == "google.cloud.storage.object.v1.finalized" and headers["ce-bucket"] == "b"
    assert headers["ce-source"] == "//storage.googleapis.com/projects/_/buckets/b"
    assert headers["ce-subject"] == "objects/sightings/x y.jpg"
    data = json.loads(body)
    assert data["id"] == "b/sightings/x y.jpg/17" and "acl" not in data and data["contentType"] == "image/jpeg"
    assert data["selfLink"] == "https://www.googleapis.com/storage/v1/b/b/o/sightings%2Fx%20y.jpg"
    _, deleted = build_event("deleted", _obj("a"))
    assert json.loads(deleted)["timeDeleted"].endswith("Z")
