"""The Firestore trigger bridge on the real Firestore emulator: each change exactly once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid

import pytest

from surgesim.emulators.identity import Issuer
from surgesim.emulators.triggers import TriggerBridge, TriggerHook
from surgesim.services.common import cloudevents
from tests.integration.bridges_support import LoopThread, Recorder, wait_until

pytestmark = pytest.mark.integration
OUTBOX = "outbox-trigger@p-local.iam.gserviceaccount.com"


def document_event(raw: bytes) -> dict:
    """A protobuf DocumentEventData body as {"value"/"oldValue": {name, fields, updateTime}, "updateMask"}."""
    data = cloudevents.document_event(raw, "application/protobuf")
    out: dict = {}
    for key, field in (("value", "value"), ("oldValue", "old_value")):
        if data.HasField(field):
            doc = getattr(data, field)
            out[key] = {"name": doc.name, "fields": cloudevents.fields(doc),
                        "updateTime": doc.update_time.ToJsonString()}
    out["updateMask"] = list(data.update_mask.field_paths)
    return out


@pytest.mark.parametrize("source", ["emulator", "listen", "poll"])
def test_each_change_delivered_exactly_once_as_a_cloudevent(gcp, source):
    db = gcp.clients.firestore()
    collection = f"parcels_{uuid.uuid4().hex[:8]}"
    db.collection(collection).document("pre-existing").set({"status": "old"})  # baseline: no event
    server = Recorder()
    lt = LoopThread()
    hook = None
    if source == "emulator":  # the emulator posts each write to the stack's firestore_events port
        hook = TriggerHook(gcp.ports("firestore")["firestore_events"])
        lt.spawn(hook.start()).result(10)
    bridge = TriggerBridge(db, collection=collection, url=server.url + "/", project=gcp.project,
                           partitions=4, issuer=(issuer := Issuer()), service_account=OUTBOX, source=source, hook=hook)
    ready = asyncio.Event()
    fut = lt.spawn(bridge.run(ready))
    try:
        assert wait_until(ready.is_set, timeout=30)
        n = 60
        ids = [uuid.uuid4().hex[:12] for _ in range(n)]  # spread over the key-space partitions
        col = db.collection(collection)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: col.document(i).set({"status": "ParcelCreated", "n": 1}), ids))
        assert wait_until(lambda: len(server.requests) >= n, timeout=30)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: col.document(i).update({"status": "ParcelDelivered", "n": 2}), ids))
        col.document(ids[0]).delete()
        assert wait_until(lambda: len(server.requests) >= 2 * n + 1, timeout=30)
        assert not wait_until(lambda: len(server.requests) > 2 * n + 1, timeout=1.0)  # nothing extra
    finally:
        bridge.stop()
        fut.result(15)
        if hook is not None:
            db.collection(collection).document("after-stop").set({"status": "late"})
            # the stopped bridge disabled its trigger: the emulator posts nothing more
            assert not wait_until(lambda: hook.unknown > 0, timeout=1.0)
            lt.spawn(hook.close()).result(10)
        lt.close()
        server.close()
    events = [(h, document_event(raw)) for (_, h, _), raw in zip(server.requests, server.raw)]
    assert all(h["content-type"] == "application/protobuf" for h, _ in events)
    assert all(h["ce-type"] == "google.cloud.firestore.document.v1.written" for h, _ in events)
    assert all(h["ce-specversion"] == "1.0" for h, _ in events)
    # Eventarc's identity: an ID token for the trigger's service account, audience the target
    claims = [issuer.verify(h["authorization"].removeprefix("Bearer "), [server.url]) for h, _ in events]
    assert {(c["email"], c["aud"]) for c in claims} == {(OUTBOX, server.url + "/")}
    assert len({h["ce-id"] for h, _ in events}) == len(events)
    keys = [(h["ce-subject"], (b.get("value") or b["oldValue"])["updateTime"], "value" in b) for h, b in events]
    assert len(set(keys)) == len(keys) == 2 * n + 1  # no change lost, none duplicated
    by_doc: dict[str, list[dict]] = {}
    for h, b in events:
        by_doc.setdefault(h["ce-document"], []).append(b)
    assert f"{collection}/pre-existing" not in by_doc
    for doc_id in ids:
        bodies = by_doc[f"{collection}/{doc_id}"]
        created = [b for b in bodies if "oldValue" not in b]
        updated = [b for b in bodies if "oldValue" in b and "value" in b]
        assert created[0]["value"]["fields"] == {"status": "ParcelCreated", "n": 1}
        assert updated[0]["value"]["fields"] == {"status": "ParcelDelivered", "n": 2}
        assert updated[0]["oldValue"]["fields"] == {"status": "ParcelCreated", "n": 1}
        assert created[0]["value"]["name"] == f"projects/{gcp.project}/databases/(default)/documents/{collection}/{doc_id}"
        assert updated[0]["updateMask"] == ["n", "status"] and created[0]["updateMask"] == []
    deleted = [b for b in by_doc[f"{collection}/{ids[0]}"] if "value" not in b]
    assert deleted[0]["oldValue"]["fields"]["n"] == 2
