"""Row shapes of the BigQuery subscription bridge."""

from __future__ import annotations

import base64
import json

import pytest

from surgesim.emulators.bq_subscription import message_row, pb_message_row

MSG = {"ackId": "a", "message": {"data": base64.b64encode(b'{"vehicleId": "v1", "speed": 3, "extra": 1}').decode(),
                                 "attributes": {"k": "v"}, "messageId": "9", "publishTime": "2024-01-01T00:00:00Z"}}


def test_write_metadata_row():
    assert message_row(MSG, "telemetry-bigquery") == {
        "subscription_name": "telemetry-bigquery", "message_id": "9", "publish_time": "2024-01-01T00:00:00Z",
        "data": '{"vehicleId": "v1", "speed": 3, "extra": 1}', "attributes": json.dumps({"k": "v"}),
    }


def test_use_table_schema_maps_json_fields_onto_columns():
    row = message_row(MSG, "s", write_metadata=False, use_table_schema=True, columns={"vehicleId", "speed"})
    assert row == {"vehicleId": "v1", "speed": 3}


def test_use_table_schema_rejects_non_json():
    bad = {"ackId": "a", "message": {"data": base64.b64encode(b"nope").decode(), "messageId": "1", "publishTime": "t"}}
    with pytest.raises(ValueError):
        message_row(bad, "s", write_metadata=False, use_table_schema=True)


def test_grpc_message_gives_the_same_row_as_rest():
    from google.pubsub_v1 import types

    rm = types.ReceivedMessage.pb()(ack_id="a")
    rm.message.data = b'{"vehicleId": "v1", "speed": 3, "extra": 1}'
    rm.message.attributes["k"] = "v"
    rm.message.message_id = "9"
    rm.message.publish_time.FromJsonString("2024-01-01T00:00:00Z")
    assert pb_message_row(rm, "telemetry-bigquery") == message_row(MSG, "telemetry-bigquery")
    cols = {"vehicleId", "speed"}
    assert (pb_message_row(rm, "s", use_table_schema=True, columns=cols)
            == message_row(MSG, "s", use_table_schema=True, columns=cols))
