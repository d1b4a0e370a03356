"""Unmodified Cloud Run functions (Functions Framework, google-events, in their own
virtualenvs, not importing surgesim: examples/functions/) behind the Cloud Run fronts of a
live run receive every Eventarc delivery: Firestore (protobuf DocumentEventData),
Pub/Sub (messagePublished) and Cloud Storage (StorageObjectData)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from surgesim.emulators import Clients
from surgesim.live import SystemRunner
from surgesim.schema import System
from tests.integration.bridges_support import wait_until

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "functions"


def _fn(source: str, target: str) -> dict:
    return {"source": str(EXAMPLES / source), "target": target, "signature": "cloudevent"}


def _lines(run: SystemRunner, service: str) -> list[dict]:
    """The JSON objects the function printed (its threads' prints may share a log line)."""
    text, out, decoder = run.procs[service].log(), [], json.JSONDecoder()
    at = text.find('{"type"')
    while at >= 0:
        try:
            obj, end = decoder.raw_decode(text, at)
        except ValueError:  # a print still being written: read it next time
            break
        out.append(obj)
        at = text.find('{"type"', end)
    return out


def test_unmodified_functions_receive_every_trigger_delivery(gcp, tmp_path):
    bucket = f"photos-{uuid.uuid4().hex[:8]}"
    system = System.model_validate({
        "name": "functions-check", "project": "surgesim-fn-check",
        "topics": [{"name": "orders"}],
        "stores": {"firestore": [{"name": "parcels"}], "storage": [{"name": bucket}]},
        "services": [
            {"name": "on-parcel", "function": _fn("firestore_hello", "hello_firestore")},
            {"name": "on-order", "function": _fn("pubsub_hello", "subscribe")},
            {"name": "on-photo", "function": _fn("storage_hello", "hello_gcs")},
        ],
        "triggers": [
            {"name": "parcels-changed", "document": "parcels/{parcelId}", "target": "on-parcel"},
            {"name": "orders-published", "topic": "orders", "target": "on-order"},
            {"name": "photos-uploaded", "bucket": bucket, "target": "on-photo"},
        ],
    })
    clients = Clients(gcp.env_vars(), project=system.project)
    with SystemRunner(system, None, gcp.state_dir, log_dir=tmp_path / "logs", purge=True) as run:
        db = clients.firestore()
        ids = [f"P{i}" for i in range(5)]
        for pid in ids:
            db.collection("parcels").document(pid).set({"status": "ParcelCreated", "n": 1})
        for pid in ids:
            db.collection("parcels").document(pid).update({"status": "ParcelDelivered"})
        db.collection("parcels").document(ids[0]).delete()
        db.collection("parcels").document("P9").collection("scans").document("S1").set({"status": "x"})  # no match

        pub = clients.publisher()
        topic = pub.topic_path(system.project, "orders")
        sent = {pub.publish(topic, f"order-{i}".encode(), orderId=str(i)).result(timeout=10): i for i in range(5)}

        blobs = clients.storage().bucket(bucket)
        for i in range(4):
            blobs.blob(f"dogs/dog-{i}.jpg").upload_from_string(b"\xff\xd8" + bytes(100 * i), content_type="image/jpeg")

        assert wait_until(lambda: len(_lines(run, "on-parcel")) >= 11 and len(_lines(run, "on-order")) >= 5
                          and len(_lines(run, "on-photo")) >= 4, timeout=30), (
            run.procs["on-parcel"].log()[-2000:], run.procs["on-order"].log()[-2000:],
            run.procs["on-photo"].log()[-2000:])
        assert not wait_until(lambda: len(_lines(run, "on-parcel")) > 11, timeout=1.0)  # nothing extra
        fs_events, ps_events, st_events = (_lines(run, s) for s in ("on-parcel", "on-order", "on-photo"))
        fronts = run.fronts.stats()

    assert all(e["type"] == "google.cloud.firestore.document.v1.written" for e in fs_events)
    assert {e["source"] for e in fs_events} == {"//firestore.googleapis.com/projects/surgesim-fn-check/databases/(default)"}
    by_doc: dict[str, list[dict]] = {}
    for e in fs_events:
        by_doc.setdefault(e["document"], []).append(e)
        assert e["subject"] == f"documents/{e['document']}"
    assert sorted(by_doc) == [f"parcels/{pid}" for pid in ids]
    for pid in ids:
        kinds = [(e["status"] or None, e["old_status"] or None, e["update_mask"]) for e in by_doc[f"parcels/{pid}"]]
        assert ("ParcelCreated", None, []) in kinds
        assert ("ParcelDelivered", "ParcelCreated", ["status"]) in kinds
    assert any(e["old_status"] == "ParcelDelivered" and not e["value"] for e in by_doc["parcels/P0"])  # deleted

    assert sorted(e["messageId"] for e in ps_events) == sorted(sent)
    for e in ps_events:
        i = sent[e["messageId"]]
        assert e["data"] == f"order-{i}" and e["attributes"] == {"orderId": str(i)} and e["id"] == e["messageId"]
        assert e["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
        assert e["source"] == "//pubsub.googleapis.com/projects/surgesim-fn-check/topics/orders"
        assert e["subscription"] == "projects/surgesim-fn-check/subscriptions/eventarc-orders-published-sub"

    assert sorted(e["name"] for e in st_events) == [f"dogs/dog-{i}.jpg" for i in range(4)]
    for e in st_events:
        assert e["type"] == "google.cloud.storage.object.v1.finalized" and e["bucket"] == bucket
        assert e["source"] == f"//storage.googleapis.com/projects/_/buckets/{bucket}"
        assert e["subject"] == f"objects/{e['name']}" and e["contentType"] == "image/jpeg"
        assert int(e["size"]) == 2 + 100 * int(e["name"][-5])
    # every delivery went through the functions' Cloud Run fronts
    assert fronts["on-parcel"]["requests"] >= 11 and fronts["on-order"]["requests"] >= 5
    assert fronts["on-photo"]["requests"] >= 4
