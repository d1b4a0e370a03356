"""Dog Finder's app and matcher as real processes on the Storage, Firestore and Pub/Sub
emulators."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import httpx
import pytest

from surgesim.schema import load_system
from surgesim.services.common.devserver import run_service
from surgesim.services.common.pubsub_push import make_envelope

pytestmark = pytest.mark.integration

SYSTEM = Path(__file__).resolve().parents[2] / "scenarios" / "systems" / "dogfinder.yaml"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64 + uuid.uuid4().bytes


@pytest.fixture(scope="module")
def dogfinder(gcp):
    from google.api_core.exceptions import Conflict

    bucket = "dogfinder-photos"
    try:
        gcp.clients.storage().create_bucket(bucket)
    except Conflict:
        pass
    topic = f"sightings-{uuid.uuid4().hex[:8]}"
    pub, sub = gcp.clients.publisher(), gcp.clients.subscriber()
    topic_path = pub.topic_path(gcp.project, topic)
    sub_path = sub.subscription_path(gcp.project, topic + "-check")
    pub.create_topic(name=topic_path)
    sub.create_subscription(name=sub_path, topic=topic_path)
    env = {**gcp.env_vars(), "SIGHTINGS_TOPIC": topic, "PHOTO_BUCKET": bucket}
    with run_service("surgesim.services.dogfinder.app:app", env) as svc:
        yield svc, sub, sub_path
    sub.delete_subscription(subscription=sub_path)
    pub.delete_topic(topic=topic_path)


def post(svc, photo=PNG, headers=None, **form):
    fields = {"breed": "Beagle", "lat": "51.50", "lng": "-0.12", "seen_at": "2024-05-04T09:30:00Z", **form}
    return httpx.post(svc.url + "/sightings", data=fields, files={"photo": ("dog.png", photo, "image/png")}, headers=headers)


def test_sighting_stores_photo_record_and_publishes_the_bigquery_row(gcp, dogfinder):
    svc, sub, sub_path = dogfinder
    r = post(svc, headers={"X-Request-Id": "sight-" + uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    row = r.json()
    assert row["sighting_date"] == "2024-05-04" and row["breed"] == "Beagle"
    bucket, name = row["photo_uri"].removeprefix("gs://").split("/", 1)
    assert gcp.clients.storage().bucket(bucket).blob(name).download_as_bytes() == PNG
    doc = gcp.clients.firestore().collection("sightings").document(row["sighting_id"]).get().to_dict()
    assert doc["published"] is True and doc["photo_uri"] == row["photo_uri"]
    got = sub.pull(subscription=sub_path, max_messages=10, timeout=10).received_messages
    assert len(got) == 1
    data = json.loads(got[0].message.data)
    columns = load_system(SYSTEM).stores.bigquery[0].columns
    assert set(data) == {c.name for c in columns}  # use_table_schema maps these fields onto the table
    assert data == row
    dt.date.fromisoformat(data["sighting_date"])
    dt.datetime.fromisoformat(data["seen_at"].replace("Z", "+00:00"))
    sub.acknowledge(subscription=sub_path, ack_ids=[m.ack_id for m in got])


def test_the_clients_sighting_id_is_kept(dogfinder):
    svc, sub, sub_path = dogfinder
    sid = uuid.uuid4().hex
    r = post(svc, sighting_id=sid, sighting_date="2024-05-04", requestId="r-" + sid)
    assert r.status_code == 201 and r.json()["sighting_id"] == sid
    got = sub.pull(subscription=sub_path, max_messages=10, timeout=10).received_messages
    sub.acknowledge(subscription=sub_path, ack_ids=[m.ack_id for m in got])
    assert [json.loads(m.message.data)["sighting_id"] for m in got] == [sid]


def test_retry_with_the_same_request_id_does_not_duplicate(gcp, dogfinder):
    svc, sub, sub_path = dogfinder
    headers = {"X-Request-Id": "sight-" + uuid.uuid4().hex}
    first, second = post(svc, headers=headers), post(svc, headers=headers)
    assert first.status_code == second.status_code == 201 and first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    got = sub.pull(subscription=sub_path, max_messages=10, timeout=10).received_messages
    assert [json.loads(m.message.data)["sighting_id"] for m in got] == [first.json()["sighting_id"]]
    sub.acknowledge(subscription=sub_path, ack_ids=[m.ack_id for m in got])


@pytest.mark.parametrize("kwargs,needle", [
    ({"photo": b"GIF? no, text"}, "photo"),
    ({"photo": b""}, "photo"),
    ({"lat": "123"}, "lat"),
    ({"breed": ""}, "breed"),
    ({"seen_at": "2999-01-01T00:00:00Z"}, "future"),
    ({"seen_at": "last tuesday"}, "seen_at"),
    ({"sighting_date": "2024-05-05"}, "sighting_date"),
    ({"sighting_id": "has space"}, "sighting_id"),
])
def test_bad_sightings_are_400(dogfinder, kwargs, needle):
    svc, _, _ = dogfinder
    r = post(svc, **kwargs)
    assert r.status_code == 400 and needle in r.text, r.text


def test_matcher_texts_each_nearby_owner_once(gcp):
    db = gcp.clients.firestore()
    breed = "Otterhound-" + uuid.uuid4().hex[:6]
    db.collection("lost_dogs").document(breed + "-near").set({"breed": breed, "lat": 51.501, "lng": -0.121, "owner_phone": "+447700900001"})
    db.collection("lost_dogs").document(breed + "-far").set({"breed": breed, "lat": 55.0, "lng": -3.0, "owner_phone": "+447700900002"})
    sighting = {"sighting_id": str(uuid.uuid4()), "sighting_date": "2024-05-04", "seen_at": "2024-05-04T09:30:00Z",
                "breed": breed, "lat": 51.5, "lng": -0.12, "photo_uri": "gs://dogfinder-photos/x.png"}
    env = gcp.env_vars()
    with run_service("surgesim.services.fakes.gateway:sms_app", env) as sms, \
            run_service("surgesim.services.dogfinder.matcher:app", {**env, "OWNER_NOTIFY_URL": sms.url}) as matcher:
        for n in range(3):
            envelope = make_envelope(sighting, {"eventId": sighting["sighting_id"]}, message_id=f"m{n}")
            r = httpx.post(matcher.url + "/pubsub", json=envelope)
            assert r.status_code == 200, r.text
        stats = httpx.get(sms.url + "/admin/stats").json()
    assert stats["effects"] == 1 and stats["calls"] == 1
    assert list(stats["per_key"]) == [f"match-{sighting['sighting_id']}-{breed}-near"]
