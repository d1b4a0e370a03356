"""The command service's hand-built Firestore writes equal the client's own, field for field."""

from __future__ import annotations

import datetime as dt

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud.firestore_v1 import _helpers

from surgesim.services.common import fs_writes

PATH = "projects/p/databases/(default)/documents/parcels/p1"
NOW = dt.datetime(2026, 12, 6, 9, 30, 1, 250000, tzinfo=dt.timezone.utc)
DOC = {
    "int": 7, "big": 2**62, "neg": -3, "yes": True, "no": False, "float": 1.5, "str": "x", "unicode": "Zoë 🚚",
    "none": None, "when": NOW, "naive": dt.datetime(2026, 1, 1, 12), "bytes": b"\x00\xff",
    "map": {"a": [1, "b", {"c": NOW}], "empty": {}}, "list": [], "tuple": (1, 2), "odd key": 2, "back`tick": 1,
    "lastEvent": {"type": "ParcelDelivered", "id": "e1", "at": NOW},
}


def test_create_equals_the_clients_create():
    assert fs_writes.create_write(PATH, DOC)._pb == _helpers.pbs_for_create(PATH, DOC)[0]._pb


def test_update_equals_the_clients_update_with_a_last_update_time_option():
    read_at = dt.datetime(2026, 12, 6, 9, 29, 59, 123456, tzinfo=dt.timezone.utc)
    theirs = _helpers.pbs_for_update(PATH, DOC, _helpers.LastUpdateOption(read_at))[0]
    assert fs_writes.update_write(PATH, DOC, read_at)._pb == theirs._pb


def test_update_keeps_a_server_timestamps_nanoseconds():
    read_at = DatetimeWithNanoseconds(2026, 12, 6, 9, 29, 59, tzinfo=dt.timezone.utc, nanosecond=123456789)
    pre = fs_writes.update_write(PATH, {"a": 1}, read_at)._pb.current_document.update_time
    assert (pre.seconds, pre.nanos) == (int(read_at.timestamp()), 123456789)


def test_field_paths_are_quoted_as_firestore_expects():
    assert fs_writes.field_path("lastEvent") == "lastEvent"
    assert fs_writes.field_path("odd key") == "`odd key`"
    assert fs_writes.field_path("a`b\\c") == "`a\\`b\\\\c`"


def test_values_it_cannot_encode_are_refused_not_guessed():
    from google.cloud.firestore_v1 import SERVER_TIMESTAMP

    with pytest.raises(TypeError, match="Sentinel"):
        fs_writes.create_write(PATH, {"at": SERVER_TIMESTAMP})
    with pytest.raises(TypeError, match="set"):
        fs_writes.create_write(PATH, {"tags": {"a"}})
