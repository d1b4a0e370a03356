"""Reading the CloudEvents Eventarc sends, as a service deployed behind it reads them.

HTTP binding of CloudEvents 1.0: binary mode (``ce-*`` headers, the data as the body, its
media type in Content-Type) or structured mode (one ``application/cloudevents+json``
envelope). Hand-rolled (a few lines) rather than the ``cloudevents`` SDK, whose module
layout changed in 2.0.

Firestore events carry ``google.events.cloud.firestore.v1.DocumentEventData``: as protobuf
(``application/protobuf``, Eventarc's default) or, when the trigger asks for JSON, in its
proto3 JSON form (``application/json``); both are decoded here with the ``google-events``
types, as Google's own samples do (``DocumentEventData()._pb.ParseFromString(data)``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from google.events.cloud import firestore as fs_events
from google.protobuf import json_format
from google.protobuf.message import DecodeError

REQUIRED = ("id", "source", "type", "specversion")


class BadEvent(ValueError):
    pass


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def parse(headers, body: bytes) -> tuple[dict[str, Any], bytes | Any, str]:
    """(attributes, data, data content type) of an HTTP CloudEvent. Binary mode gives the
    body's bytes; structured mode the envelope's ``data`` (any JSON) or ``data_base64``'s bytes."""
    headers = {k.lower(): v for k, v in headers.items()}
    ctype = _media_type(headers.get("content-type"))
    if ctype == "application/cloudevents+json":
        try:
            envelope = json.loads(body)
        except ValueError:
            raise BadEvent("structured CloudEvent is not JSON") from None
        if not isinstance(envelope, dict):
            raise BadEvent("structured CloudEvent must be a JSON object")
        attrs = {k: v for k, v in envelope.items() if k not in ("data", "data_base64")}
        data: Any = envelope.get("data")
        if "data_base64" in envelope:
            try:
                data = base64.b64decode(envelope["data_base64"], validate=True)
            except ValueError:
                raise BadEvent("data_base64 is not base64") from None
        ctype = _media_type(envelope.get("datacontenttype") or "application/json")
    else:
        attrs = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
        data = body
    missing = [k for k in REQUIRED if not attrs.get(k)]
    if missing:
        raise BadEvent(f"not a CloudEvent: missing {', '.join('ce-' + m for m in missing)}")
    if str(attrs["specversion"]) != "1.0":
        raise BadEvent(f"unsupported CloudEvents specversion {attrs['specversion']!r}")
    return attrs, data, ctype


def document_event(data: bytes | Any, ctype: str):
    """A Firestore event's data as a ``DocumentEventData`` (google-events, raw protobuf)."""
    msg = fs_events.DocumentEventData.pb()()
    try:
        if ctype == "application/protobuf" and isinstance(data, (bytes, bytearray)):
            msg.ParseFromString(bytes(data))
        elif ctype == "application/json":
            json_format.ParseDict(json.loads(data) if isinstance(data, (bytes, bytearray, str)) else data, msg)
        else:
            raise BadEvent(f"Firestore event data must be application/protobuf or application/json, not {ctype!r}")
    except (ValueError, DecodeError, json_format.ParseError) as exc:
        raise BadEvent(f"Firestore event data is not a DocumentEventData ({exc})") from None
    return msg


def _ts(ts) -> str:
    return ts.ToDatetime(tzinfo=dt.timezone.utc).isoformat().replace("+00:00", "Z")


def value(v) -> Any:
    """A Firestore ``Value`` as plain Python (timestamps as ISO text, references as paths)."""
    kind = v.WhichOneof("value_type")
    if kind is None or kind == "null_value":
        return None
    if kind == "map_value":
        return {k: value(x) for k, x in v.map_value.fields.items()}
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "timestamp_value":
        return _ts(v.timestamp_value)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind == "geo_point_value":
        return {"latitude": v.geo_point_value.latitude, "longitude": v.geo_point_value.longitude}
    if kind == "reference_value":
        return v.reference_value.split("/documents/", 1)[-1]
    return getattr(v, kind)


def fields(doc) -> dict[str, Any]:
    """A ``Document``'s fields as plain Python."""
    return {k: value(v) for k, v in doc.fields.items()}
