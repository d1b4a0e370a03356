"""Firestore ``Write`` messages built straight as protobufs, for the hot commit paths.

The client's ``batch.create`` / ``batch.update`` build every field as a proto-plus
message (``_helpers.pbs_for_create``): for the command service's two documents that was a
quarter of its CPU under load (py-spy, docs/benchmarks/bridges.md). These functions fill
the same ``Write`` protobuf in place through the C (upb) message classes, and hand it to
an ordinary client batch, so the commit itself -- retries, error mapping, metadata --
stays the client's. tests/unit/test_fs_writes.py checks that the messages equal the
client's own for every value type used here.

Only plain values are supported (None, bool, int, float, str, bytes, datetime, dict,
list); sentinels such as ``SERVER_TIMESTAMP`` or ``Increment`` need the client's path.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from google.cloud.firestore_v1.types import write as write_types

_Write = write_types.Write.pb()
_SIMPLE_FIELD = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")


def _fill(value_pb, x: Any) -> None:
    # bool before int: bool is an int subclass, and Firestore keeps them apart
    if x is None:
        value_pb.null_value = 0
    elif isinstance(x, bool):
        value_pb.boolean_value = x
    elif isinstance(x, int):
        value_pb.integer_value = x
    elif isinstance(x, float):
        value_pb.double_value = x
    elif isinstance(x, str):
        value_pb.string_value = x
    elif isinstance(x, dict):
        fields = value_pb.map_value.fields
        value_pb.map_value.SetInParent()  # an empty dict is still a map
        for k, v in x.items():
            _fill(fields[k], v)
    elif isinstance(x, (list, tuple)):
        values = value_pb.array_value.values
        value_pb.array_value.SetInParent()
        for v in x:
            _fill(values.add(), v)
    elif isinstance(x, dt.datetime):
        _timestamp(value_pb.timestamp_value, x)
    elif isinstance(x, (bytes, bytearray)):
        value_pb.bytes_value = bytes(x)
    else:
        raise TypeError(f"cannot encode {type(x).__name__} here; use the Firestore client's own write path")


def _timestamp(ts_pb, when: dt.datetime) -> None:
    # Keep a server timestamp's nanoseconds: an update-time precondition must match exactly.
    exact = getattr(when, "timestamp_pb", None)
    if exact is not None:
        ts_pb.CopyFrom(exact())
    else:
        ts_pb.FromDatetime(when)  # naive means UTC, as the client reads it


def field_path(key: str) -> str:
    """One top-level key as a Firestore field path (backquoted unless a plain identifier)."""
    if _SIMPLE_FIELD.match(key):
        return key
    return "`" + key.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _with_fields(document_path: str, data: dict) -> Any:
    w = _Write()
    w.update.name = document_path
    fields = w.update.fields
    for k, v in data.items():
        _fill(fields[k], v)
    return w


def create_write(document_path: str, data: dict) -> write_types.Write:
    """The ``Write`` of ``batch.create``: the document must not exist yet."""
    w = _with_fields(document_path, data)
    w.current_document.exists = False
    return write_types.Write.wrap(w)


def update_write(document_path: str, data: dict, last_update_time: dt.datetime) -> write_types.Write:
    """The ``Write`` of ``batch.update(..., option=write_option(last_update_time=...))`` for
    top-level keys: each key's value replaces that field whole, and the document must
    still have the update time it was read with."""
    w = _with_fields(document_path, data)
    w.update_mask.field_paths.extend(field_path(k) for k in sorted(data))
    _timestamp(w.current_document.update_time, last_update_time)
    return write_types.Write.wrap(w)


# The client's batches take prepared writes through ``_add_write_pbs`` (what its own
# transactions use); these two are the only places that reach for it.
def create(batch, ref, data: dict) -> None:
    """``batch.create(ref, data)``."""
    batch._add_write_pbs([create_write(ref._document_path, data)])  # noqa: SLF001


def update(batch, ref, data: dict, last_update_time: dt.datetime) -> None:
    """``batch.update(ref, data, option=client.write_option(last_update_time=...))``."""
    batch._add_write_pbs([update_write(ref._document_path, data, last_update_time)])  # noqa: SLF001
