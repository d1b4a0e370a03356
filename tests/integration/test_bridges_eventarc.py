"""Eventarc trigger kinds through Bridges on the real emulators: a Pub/Sub trigger's
retries and dead letters, a Firestore trigger's JSON encoding and database filter."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from surgesim.emulators.bridges import Bridges
from surgesim.emulators.identity import Issuer
from surgesim.schema import System
from tests.integration.bridges_support import Recorder, fresh, wait_until

pytestmark = pytest.mark.integration


def test_a_pubsub_trigger_retries_with_the_same_ce_id_and_dead_letters_after_max_attempts(gcp):
    topic, dlq, hold, name = fresh("orders"), fresh("orders-dlq"), fresh("orders-hold"), fresh("on-order")
    system = System.model_validate({
        "name": "mini", "project": gcp.project,
        "topics": [{"name": topic}, {"name": dlq}], "subscriptions": [{"name": hold, "topic": dlq}],
        "services": [{"name": "fn"}],
        "triggers": [{"name": name, "topic": topic, "target": "fn", "retry": {"min_backoff": "0s", "max_backoff": "0s"},
                      "dead_letter": {"topic": dlq, "max_attempts": 5}}],
    })
    server = Recorder(respond=lambda body: 500 if base64.b64decode(body["message"]["data"]) == b"poison" else 204)
    issuer = Issuer()
    bridges = Bridges(system, None, pubsub_endpoint=gcp.endpoint("pubsub"), service_urls={"fn": server.url},
                      issuer=issuer, fidelity=gcp.fidelity)
    bridges.start()
    pub, sub = gcp.clients.publisher(), gcp.clients.subscriber()
    try:
        path = pub.topic_path(gcp.project, topic)
        ids = [pub.publish(path, b"poison").result(timeout=10), pub.publish(path, b"fine", k="v").result(timeout=10)]
        assert wait_until(lambda: len(server.requests) >= 6, timeout=30)
        dead: list = []

        def dead_lettered() -> bool:
            got = sub.pull(subscription=sub.subscription_path(gcp.project, hold), max_messages=10, timeout=5)
            dead.extend(got.received_messages)
            return bool(dead)

        assert wait_until(dead_lettered, timeout=30)
        assert not wait_until(lambda: len(server.requests) > 6, timeout=1.0)
    finally:
        bridges.stop()
        server.close()
    by_id: dict[str, list] = {}
    for _, headers, body in server.requests:
        assert headers["ce-type"] == "google.cloud.pubsub.topic.v1.messagePublished"
        assert headers["ce-id"] == body["message"]["messageId"]
        # Eventarc invokes with the trigger's identity, audience the target
        claims = issuer.verify(headers["authorization"].removeprefix("Bearer "), [server.url])
        assert claims["email"] == f"{name}-trigger@{gcp.project}.iam.gserviceaccount.com"
        assert body["subscription"] == f"projects/{gcp.project}/subscriptions/eventarc-{name}-sub"
        by_id.setdefault(headers["ce-id"], []).append(body)
    assert len(by_id[ids[0]]) == 5 and len(by_id[ids[1]]) == 1  # exactly max_attempts, then the DLQ
    assert by_id[ids[1]][0]["message"]["attributes"] == {"k": "v"}
    assert dead[0].message.data == b"poison"


def test_firestore_trigger_json_encoding_and_database_filter(gcp):
    collection = f"parcels_{uuid.uuid4().hex[:8]}"
    system = System.model_validate({
        "name": "mini", "project": gcp.project, "stores": {"firestore": [{"name": collection}]},
        "services": [{"name": "default-db"}, {"name": "other-db"}],
        "triggers": [
            {"name": fresh("as-json"), "document": f"{collection}/{{parcelId}}", "target": "default-db",
             "encoding": "json"},
            {"name": fresh("other"), "document": f"{collection}/{{parcelId}}", "target": "other-db",
             "database": "other"},
        ],
    })
    default_db, other_db = Recorder(), Recorder()
    db = gcp.clients.firestore()
    bridges = Bridges(system, None, pubsub_endpoint=gcp.endpoint("pubsub"), firestore=db, fidelity=gcp.fidelity,
                      service_urls={"default-db": default_db.url, "other-db": other_db.url},
                      firestore_events_port=gcp.ports("firestore")["firestore_events"])
    bridges.start()
    try:
        db.collection(collection).document("p1").set({"status": "ParcelCreated"})
        db.collection(collection).document("p1").update({"status": "ParcelAssigned"})
        assert wait_until(lambda: len(default_db.requests) >= 2, timeout=20)
        assert not wait_until(lambda: len(default_db.requests) > 2 or other_db.requests, timeout=1.5)
    finally:
        bridges.stop()
        default_db.close()
        other_db.close()
    (_, h1, created), (_, h2, updated) = sorted(default_db.requests, key=lambda r: "oldValue" in r[2])
    assert h1["content-type"] == h2["content-type"] == "application/json"
    assert h1["ce-database"] == "(default)" and h1["ce-document"] == f"{collection}/p1"
    assert created["value"]["fields"] == {"status": {"stringValue": "ParcelCreated"}} and "oldValue" not in created
    assert updated["oldValue"]["fields"] == {"status": {"stringValue": "ParcelCreated"}}
    assert updated["value"]["fields"] == {"status": {"stringValue": "ParcelAssigned"}}
    assert updated["updateMask"] == {"fieldPaths": ["status"]}
    assert json.loads(json.dumps(updated))  # plain proto3 JSON, nothing else
