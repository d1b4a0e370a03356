"""The BigQuery subscription bridge: topic -> table on the BigQuery emulator."""

from __future__ import annotations

import json
import uuid

import pytest

from surgesim.emulators.bq_subscription import BigQuerySubscriptionBridge
from surgesim.emulators.pubsub_rest import PubSubRest, b64
from tests.integration.bridges_support import LoopThread, fresh, wait_until

pytestmark = pytest.mark.integration


def test_rows_land_with_metadata_columns(gcp):
    if not gcp.emulators.get("bigquery") or not gcp.emulators["bigquery"].healthy:
        pytest.skip("the BigQuery emulator is not running in this stack")
    from google.cloud import bigquery

    bq = gcp.clients.bigquery()
    dataset = f"fleet_{uuid.uuid4().hex[:6]}"
    bq.create_dataset(dataset)
    schema = [bigquery.SchemaField(n, t) for n, t in (("subscription_name", "STRING"), ("message_id", "STRING"),
                                                       ("publish_time", "TIMESTAMP"), ("data", "STRING"),
                                                       ("attributes", "STRING"))]
    bq.create_table(bigquery.Table(f"{gcp.project}.{dataset}.telemetry_raw", schema=schema))
    lt = LoopThread()
    rest = lt.run(_rest(gcp))
    topic, sub = fresh("t-bq"), fresh("s-bq")
    bridge = BigQuerySubscriptionBridge(rest, bq, subscription=sub, topic=topic, table=f"{dataset}.telemetry_raw",
                                        batch=100)
    try:
        lt.run(bridge.provision())
        fut = lt.spawn(bridge.run())
        ids = lt.run(rest.publish(topic, [{"data": b64(json.dumps({"v": i})), "attributes": {"vehicleId": f"v{i}"}}
                                          for i in range(250)]))
        assert wait_until(lambda: bridge.counters.rows == 250, timeout=30)
        lt.loop.call_soon_threadsafe(bridge.stop)
        fut.result(10)
        rows = list(bq.query(f"SELECT subscription_name AS s, message_id AS m, data AS d, attributes AS a "
                             f"FROM `{gcp.project}.{dataset}.telemetry_raw`").result())
        assert len(rows) == 250
        assert {r["m"] for r in rows} == set(ids)
        one = next(r for r in rows if r["m"] == ids[7])
        assert one["s"] == sub and json.loads(one["d"]) == {"v": 7} and json.loads(one["a"]) == {"vehicleId": "v7"}
        assert lt.run(rest.pull(sub, 10)) == []  # all acked
    finally:
        lt.run(rest.aclose())
        lt.close()


async def _rest(gcp):
    return PubSubRest(gcp.endpoint("pubsub"), gcp.project)


def test_a_trickle_is_written_in_few_inserts_and_nothing_waits_long(gcp):
    """One message every 50 ms for 2 s: inserts that are not full start at most every
    min_interval (the emulator copies the table on every insert), and every row still lands
    within about that interval."""
    if not gcp.emulators.get("bigquery") or not gcp.emulators["bigquery"].healthy:
        pytest.skip("the BigQuery emulator is not running in this stack")
    import time

    from google.cloud import bigquery

    bq = gcp.clients.bigquery()
    dataset = f"fleet_{uuid.uuid4().hex[:6]}"
    bq.create_dataset(dataset)
    bq.create_table(bigquery.Table(f"{gcp.project}.{dataset}.trickle",
                                   schema=[bigquery.SchemaField("data", "STRING"),
                                           bigquery.SchemaField("message_id", "STRING")]))
    lt = LoopThread()
    rest = lt.run(_rest(gcp))
    topic, sub = fresh("t-bq"), fresh("s-bq")
    bridge = BigQuerySubscriptionBridge(rest, bq, subscription=sub, topic=topic, table=f"{dataset}.trickle",
                                        write_metadata=False, use_table_schema=True, min_interval=0.5)
    try:
        lt.run(bridge.provision())
        fut = lt.spawn(bridge.run())
        for i in range(40):
            lt.run(rest.publish(topic, [{"data": b64(json.dumps({"data": str(i)}))}]))
            time.sleep(0.05)
        sent_at = time.monotonic()
        assert wait_until(lambda: bridge.counters.rows == 40, timeout=10)
        caught_up_s = time.monotonic() - sent_at
        lt.loop.call_soon_threadsafe(bridge.stop)
        fut.result(10)
    finally:
        lt.run(rest.aclose())
        lt.close()
    # ~2 s of publishing at one insert per 0.5 s at most (an insert per pull would be ~40)
    assert bridge.counters.batches <= 7, bridge.counters
    assert caught_up_s < 2.0
