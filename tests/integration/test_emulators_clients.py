"""The official clients, from gcp.clients, against the running emulators."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_bigquery_partitioned_table_insert_and_queries(gcp):
    from google.cloud import bigquery

    bq = gcp.clients.bigquery()
    ds = bq.create_dataset(_name("dogfinder"))
    table_id = f"{gcp.project}.{ds.dataset_id}.sightings"
    table = bigquery.Table(table_id, schema=[
        bigquery.SchemaField("sighting_id", "STRING", mode="REQUIRED"),
        bigquery.SchemaField("breed", "STRING"),
        bigquery.SchemaField("sighting_date", "DATE"),
        bigquery.SchemaField("confidence", "FLOAT"),
    ])
    table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field="sighting_date")
    bq.create_table(table)
    got = bq.get_table(table_id)
    assert got.time_partitioning.field == "sighting_date" and got.time_partitioning.type_ == "DAY"

    breeds = ["labrador", "pug", "collie", "beagle"]
    rows = [{"sighting_id": f"s{i}", "breed": breeds[i % 4],
             "sighting_date": "2026-11-23" if i % 3 else "2026-11-22", "confidence": (i % 10) / 10}
            for i in range(300)]
    assert bq.insert_rows_json(table_id, rows, retry=None, timeout=30) == []

    def q(sql):
        return [dict(r) for r in bq.query(sql).result(timeout=30)]

    assert q(f"SELECT COUNT(*) AS n, COUNT(DISTINCT breed) AS breeds FROM `{table_id}`") == [{"n": 300, "breeds": 4}]
    by_breed = q(f"SELECT breed, COUNT(*) AS n FROM `{table_id}` GROUP BY breed ORDER BY breed")
    assert by_breed == [{"breed": b, "n": 75} for b in sorted(breeds)]
    quant = q(f"SELECT APPROX_QUANTILES(confidence, 4) AS q FROM `{table_id}`")[0]["q"]
    assert len(quant) == 5 and quant[0] == 0.0 and quant[-1] == pytest.approx(0.9)
    assert q(f"SELECT COUNT(*) AS n FROM `{table_id}` WHERE sighting_date = '2026-11-23'") == [{"n": 200}]
    assert ds.dataset_id in [d.dataset_id for d in bq.list_datasets()]


def test_storage_bucket_upload_download(gcp):
    gcs = gcp.clients.storage()
    bucket = gcs.create_bucket(_name("sightings").replace("_", "-"))
    payload = bytes(range(256)) * 40
    bucket.blob("2026/11/23/dog.jpg").upload_from_string(payload, content_type="image/jpeg")
    blob = gcs.bucket(bucket.name).get_blob("2026/11/23/dog.jpg")
    assert blob.size == len(payload) and blob.content_type == "image/jpeg"
    assert blob.download_as_bytes() == payload
    assert [b.name for b in gcs.list_blobs(bucket.name, prefix="2026/")] == ["2026/11/23/dog.jpg"]
    assert bucket.name in [b.name for b in gcs.list_buckets()]


def test_pubsub_publish_and_pull(gcp):
    pub, sub = gcp.clients.publisher(), gcp.clients.subscriber()
    topic = pub.topic_path(gcp.project, _name("t"))
    subscription = sub.subscription_path(gcp.project, _name("s"))
    pub.create_topic(name=topic)
    sub.create_subscription(name=subscription, topic=topic)
    ids = [pub.publish(topic, f"m{i}".encode(), n=str(i)).result(timeout=10) for i in range(5)]
    got = []
    for _ in range(20):
        resp = sub.pull(subscription=subscription, max_messages=10, timeout=5)
        got += resp.received_messages
        if resp.received_messages:
            sub.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in resp.received_messages])
        if len(got) >= 5:
            break
    assert sorted(m.message.message_id for m in got) == sorted(ids)
    sub.close()


def test_firestore_write_read(gcp):
    import os

    before = os.environ.get("FIRESTORE_EMULATOR_HOST")
    db = gcp.clients.firestore()
    assert os.environ.get("FIRESTORE_EMULATOR_HOST") == before  # not leaked into the process
    ref = db.collection(_name("dogs")).document("rex")
    ref.set({"breed": "collie", "seen": 3})
    assert ref.get().to_dict() == {"breed": "collie", "seen": 3}
