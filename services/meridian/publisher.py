"""Meridian's event publisher: the parcels outbox. Receives the Firestore document-change
CloudEvent (Eventarc's `google.cloud.firestore.document.v1.written`) and publishes the
typed event the change records (`lastEvent`) to logistics.events.

The event is read as Eventarc delivers it: binary mode (ce-* headers) or structured
(application/cloudevents+json), data a `google.events.cloud.firestore.v1.DocumentEventData`
as protobuf (application/protobuf, Eventarc's default) or its JSON form (application/json),
decoded with the `google-events` types (services/common/cloudevents.py). A change whose
`lastEvent.id` equals the old document's is not a new event (e.g. a field touched by
something else) and publishes nothing. Pub/Sub has no idempotent publish: a redelivered
CloudEvent publishes the event again with the same eventId attribute, and consumers dedupe
on eventId, not messageId.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from surgesim.services.common import cloudevents, gcp, trace
from surgesim.services.common.cloudevents import BadEvent
from surgesim.services.common.runtime import create_app

from .model import EVENT_TOPIC, PARCELS

FIRESTORE_TYPES = tuple(f"google.cloud.firestore.document.v1.{k}" for k in ("written", "created", "updated", "deleted"))


def parse_cloudevent(headers, body: bytes):
    """(attributes, DocumentEventData) of a Firestore CloudEvent; BadEvent if it is not one."""
    attrs, data, ctype = cloudevents.parse(headers, body)
    if attrs.get("type") not in FIRESTORE_TYPES:
        raise BadEvent(f"unexpected CloudEvent type {attrs.get('type')!r}; expected one of {', '.join(FIRESTORE_TYPES)}")
    return attrs, cloudevents.document_event(data, ctype)


def typed_event(attrs: dict[str, Any], data) -> dict[str, Any] | None:
    """The event to publish for this document change, or None if the change is not one."""
    if not data.HasField("value"):  # deleted
        return None
    new = cloudevents.fields(data.value)
    old = cloudevents.fields(data.old_value) if data.HasField("old_value") else {}
    last = new.get("lastEvent")
    if not isinstance(last, dict) or not last.get("type") or not last.get("id"):
        return None
    if isinstance(old.get("lastEvent"), dict) and old["lastEvent"].get("id") == last["id"]:
        return None
    name = data.value.name or attrs.get("subject") or ""
    parcel_id = new.get("parcelId") or str(name).rsplit("/", 1)[-1]
    if f"{PARCELS}/" not in str(name) and not new.get("parcelId"):
        raise BadEvent("document is not a parcel (no parcelId and name not under parcels/)")
    parcel = {k: v for k, v in new.items() if k != "lastEvent"}
    return {
        "eventId": str(last["id"]),
        "eventType": str(last["type"]),
        "parcelId": str(parcel_id),
        "occurredAt": last.get("at"),
        "version": new.get("version"),
        "requestId": last.get("requestId"),
        "traceparent": last.get("traceparent"),
        "parcel": parcel,
    }


def build_app(publisher=None) -> FastAPI:
    holder: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        holder["pub"] = publisher or gcp.publisher()
        yield
        if publisher is None:
            holder["pub"].stop()

    app = create_app("event-publisher", lifespan=lifespan, title="Meridian event publisher",
                     description=__doc__.split("\n\n")[0])
    log = app.state.log
    topic = os.environ.get("EVENT_TOPIC", EVENT_TOPIC)

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            attrs, data = parse_cloudevent(request.headers, body)
            event = typed_event(attrs, data)
        except BadEvent as exc:
            # Eventarc retries non-2xx; a malformed event never gets better, so refuse it
            # with 400 (it is logged and, after retries, dropped or dead-lettered).
            log.warning("refused CloudEvent", extra={"reason": str(exc)})
            return JSONResponse({"error": str(exc)}, status_code=400)
        if event is None:
            return JSONResponse({"status": "no event in this change"}, status_code=200)
        parent = trace.parse_traceparent(event.get("traceparent"))
        ctx = parent.child() if parent else (trace.current.get() or trace.new_trace())
        trace.current.set(ctx)
        attributes = {"eventType": event["eventType"], "parcelId": event["parcelId"], "eventId": event["eventId"],
                      "traceparent": ctx.traceparent}
        for key in ("driverId", "vehicleId", "shipperId"):
            if event["parcel"].get(key):
                attributes[key] = str(event["parcel"][key])
        payload = {k: v for k, v in event.items() if k != "traceparent"}
        message_id = await gcp.publish(holder["pub"], topic, json.dumps(payload, default=str).encode(), **attributes)
        log.info("published", extra={"eventId": event["eventId"], "eventType": event["eventType"],
                                     "parcelId": event["parcelId"], "messageId": message_id,
                                     "cloudEventId": attrs.get("id")})
        return JSONResponse({"status": "published", "messageId": message_id, "eventId": event["eventId"]})

    app.add_api_route("/", receive, methods=["POST"], summary="Eventarc CloudEvent receiver")
    app.add_api_route("/events", receive, methods=["POST"], include_in_schema=False)
    return app


app = build_app()
