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
