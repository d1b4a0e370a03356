"""Meridian's event reactors: one push endpoint each on a filtered subscription of
logistics.events, all built by one factory (surgesim.services.common.reactor).

| app | acts on | does | external effect guarded by |
| --- | --- | --- | --- |
| eta_app | ParcelAssigned, ParcelOutForDelivery, GeofenceCrossed | reads the parcel, publishes RouteEtaUpdated | event id derived from the cause's |
| notification_app | ParcelOutForDelivery, ParcelDelivered | texts the recipient (the only SMS caller) | claim + Idempotency-Key |
| billing_app | ParcelDelivered | charges the shipper, writes invoices/{parcelId} | claim + Idempotency-Key |
| driver_scoring_app | ParcelDelivered, GeofenceCrossed | bumps drivers/{driverId} | dedupe record created in the same commit |
| pod_app | ParcelDelivered | files pods/{parcelId} | a set() is idempotent |
| client_webhook_app | Parcel* except ParcelCreated | calls the shipper's webhook | claim + Idempotency-Key |
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import uuid

from surgesim.services.common import gcp, trace
from surgesim.services.common.apis import PermanentError, call_api
from surgesim.services.common.idempotency import PROCESSED, doc_id
from surgesim.services.common.pubsub_push import PushEvent
from surgesim.services.common.reactor import Ignored, ReactorContext, make_reactor

from .model import EVENT_TOPIC, PARCELS

_ETA_NS = uuid.UUID("6f1c1d1e-6574-6100-0000-000000000000")


def _url(var: str, default: str) -> str:
    return os.environ.get(var, default).rstrip("/")


def _timeout(var: str, default: float) -> float:
    return float(os.environ.get(var, default))


def _parcel(event: PushEvent) -> dict:
    parcel = event.data.get("parcel")
    return parcel if isinstance(parcel, dict) else {}


def _parcel_id(event: PushEvent) -> str:
    pid = event.attributes.get("parcelId") or event.data.get("parcelId") or _parcel(event).get("parcelId")
    if not pid:
        raise PermanentError("event has no parcelId")
    return str(pid)


# ---- notification: the only caller of the SMS gateway --------------------------------------

_SMS_TEXT = {
    "ParcelOutForDelivery": "Your parcel {parcelId} is out for delivery today.",
    "ParcelDelivered": "Your parcel {parcelId} has been delivered.",
}


async def notify(ctx: ReactorContext, event: PushEvent) -> dict:
    parcel = _parcel(event)
    phone = (parcel.get("recipient") or {}).get("phone")
    if not phone:
        raise PermanentError("parcel has no recipient phone")
    pid = _parcel_id(event)
    answer = await call_api(
        ctx.http, _url("SMS_GATEWAY_URL", "http://127.0.0.1:8091") + "/v1/messages",
        {"to": phone, "body": _SMS_TEXT[event.event_type].format(parcelId=pid), "parcelId": pid},
        idempotency_key=f"notification-{event.event_id}", timeout=_timeout("SMS_TIMEOUT_SECONDS", 10.0),
    )
    return {"sid": answer.get("sid")}


# ---- billing ---------------------------------------------------------------------------------


async def bill(ctx: ReactorContext, event: PushEvent) -> dict:
    parcel = _parcel(event)
    pid = _parcel_id(event)
    amount = parcel.get("priceCents")
    if not isinstance(amount, int) or amount <= 0:
        raise PermanentError("parcel has no positive priceCents")
    charge = await call_api(
        ctx.http, _url("BILLING_API_URL", "http://127.0.0.1:8092") + "/v1/charges",
        {"parcelId": pid, "shipperId": parcel.get("shipperId"), "amountCents": amount, "currency": "GBP"},
        # keyed on the parcel: one delivered parcel is billed once, however many events say so
        idempotency_key=f"billing-{pid}", timeout=_timeout("BILLING_TIMEOUT_SECONDS", 10.0),
    )
    await ctx.db.collection("invoices").document(pid).set({
        "parcelId": pid, "shipperId": parcel.get("shipperId"), "amountCents": amount,
        "chargeId": charge.get("chargeId"), "eventId": event.event_id,
        "createdAt": dt.datetime.now(dt.timezone.utc),
    })
    return {"chargeId": charge.get("chargeId")}


# ---- client webhook ----------------------------------------------------------------------------


async def client_webhook(ctx: ReactorContext, event: PushEvent) -> dict:
    if not event.event_type.startswith("Parcel") or event.event_type == "ParcelCreated":
        raise Ignored(f"{event.event_type} is not sent to shippers")
    shipper = _parcel(event).get("shipperId") or "unknown"
    await call_api(
        ctx.http, _url("CLIENT_WEBHOOK_URL", "http://127.0.0.1:8093") + f"/webhooks/{shipper}",
        {"eventId": event.event_id, "eventType": event.event_type, "parcelId": _parcel_id(event),
         "occurredAt": event.data.get("occurredAt")},
        idempotency_key=f"webhook-{event.event_id}", timeout=_timeout("CLIENT_WEBHOOK_TIMEOUT_SECONDS", 5.0),
    )
    return {"shipperId": shipper}


# ---- proof of delivery ---------------------------------------------------------------------------


async def file_pod(ctx: ReactorContext, event: PushEvent) -> dict:
    parcel, pid = _parcel(event), _parcel_id(event)
    await ctx.db.collection("pods").document(pid).set({
        "parcelId": pid, "driverId": parcel.get("driverId"), "signedBy": parcel.get("signedBy"),
        "photoUri": parcel.get("photoUri"), "deliveredAt": parcel.get("deliveredAt"), "eventId": event.event_id,
    })
    return {"parcelId": pid}


# ---- driver scoring: dedupe and effect in one commit ---------------------------------------------


async def score_driver(ctx: ReactorContext, event: PushEvent) -> dict:
    from google.api_core import exceptions as gexc
    from google.cloud import firestore

    driver = _parcel(event).get("driverId") or event.data.get("driverId") or event.attributes.get("driverId")
    if not driver:
        raise Ignored("no driver on this event")
    points = 10 if event.event_type == "ParcelDelivered" else 1
    field = "deliveries" if event.event_type == "ParcelDelivered" else "geofenceCrossings"
    driver_ref = ctx.db.collection("drivers").document(str(driver))
    seen_ref = ctx.db.collection(PROCESSED).document(doc_id(f"driver-scoring-{event.event_id}"))

    # One commit: the dedupe record's create (precondition: absent) and the increments
    # apply together or not at all, so a redelivery fails the create and adds nothing.
    now = dt.datetime.now(dt.timezone.utc)
    batch = ctx.db.batch()
    batch.create(seen_ref, {"state": "done", "key": event.event_id, "claimedAt": now, "expireAt": now + dt.timedelta(days=7)})
    batch.set(driver_ref, {"driverId": driver, "score": firestore.Increment(points), field: firestore.Increment(1),
                           "updatedAt": now}, merge=True)
    try:
        await batch.commit()
    except gexc.AlreadyExists:
        return {"driverId": driver, "duplicate": True}
    return {"driverId": driver, "points": points}


# ---- ETA ---------------------------------------------------------------------------------------------


def _km(a: dict, b: dict) -> float:
    lat1, lng1, lat2, lng2 = map(math.radians, (a["lat"], a["lng"], b["lat"], b["lng"]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(h))


async def _parcels_for(ctx: ReactorContext, event: PushEvent) -> list[dict]:
    if event.attributes.get("parcelId") or event.data.get("parcelId"):
        snap = await ctx.db.collection(PARCELS).document(_parcel_id(event)).get()
        return [snap.to_dict()] if snap.exists else []
    vehicle = event.data.get("vehicleId") or event.attributes.get("vehicleId")
    if not vehicle:
        raise PermanentError("event names neither a parcel nor a vehicle")
    query = ctx.db.collection(PARCELS).where("vehicleId", "==", str(vehicle)).limit(20)
    return [d.to_dict() async for d in query.stream() if d.get("status") in ("assigned", "out_for_delivery")]


async def update_eta(ctx: ReactorContext, event: PushEvent) -> dict:
    speed_kph = float(os.environ.get("ETA_SPEED_KPH", "30"))
    here = event.data if {"lat", "lng"} <= set(event.data) else None
    published = []
    for parcel in await _parcels_for(ctx, event):
        dest = parcel.get("destination") or {}
        start = here or parcel.get("origin") or dest
        if not {"lat", "lng"} <= set(dest) or not start:
            continue
        eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=_km(start, dest) / speed_kph)
        # derived id: a redelivered cause republishes the same RouteEtaUpdated, which consumers dedupe
        eid = str(uuid.uuid5(_ETA_NS, f"{event.event_id}/{parcel['parcelId']}"))
        ctx_trace = (trace.current.get() or trace.new_trace()).child()
        data = {"eventId": eid, "eventType": "RouteEtaUpdated", "parcelId": parcel["parcelId"],
                "vehicleId": parcel.get("vehicleId"), "eta": eta.isoformat(), "causeEventId": event.event_id}
        await gcp.publish(ctx.publisher, os.environ.get("EVENT_TOPIC", EVENT_TOPIC), json.dumps(data).encode(),
                          eventType="RouteEtaUpdated", parcelId=parcel["parcelId"], eventId=eid,
                          traceparent=ctx_trace.traceparent)
        published.append(parcel["parcelId"])
    return {"published": len(published)}


eta_app = make_reactor("eta", update_eta, event_types=("ParcelAssigned", "ParcelOutForDelivery", "GeofenceCrossed"),
                       description="Recomputes the route ETA and emits RouteEtaUpdated.")
notification_app = make_reactor("notification", notify, event_types=tuple(_SMS_TEXT), side_effect=True,
                                description="The only caller of the SMS gateway; idempotent on the event id.")
billing_app = make_reactor("billing", bill, event_types=("ParcelDelivered",), side_effect=True,
                           description="Bills a delivered parcel through the billing API with an idempotency key.")
driver_scoring_app = make_reactor("driver-scoring", score_driver, event_types=("ParcelDelivered", "GeofenceCrossed"),
                                  description="Updates the driver's score.")
pod_app = make_reactor("pod", file_pod, event_types=("ParcelDelivered",), description="Files the proof of delivery.")
client_webhook_app = make_reactor("client-webhook", client_webhook, side_effect=True,
                                  event_types=lambda t: t.startswith("Parcel") and t != "ParcelCreated",
                                  description="Calls the shipper's webhook.")
