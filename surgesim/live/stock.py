"""Pre-loaded parcel stock for a live run: parcels already created / assigned / out for
delivery, written straight into the Firestore emulator before the bridges start, so the
run's lifecycle commands find a parcel ready from the first second (docs/live.md).

Why direct writes, not the command service: a stocked parcel ready for mark_delivered is
three commands, each a Firestore commit plus an event through the trigger, the
publisher and three reactors (the SMS gateway fake included). Sent for real before the
clock, that is thousands of events whose settlement would overlap the run's start and its
metrics; written in bulk before the trigger bridge's first read, the documents are its
baseline (Eventarc fires only for changes after the trigger exists) and no event leaves.

The documents are what the command service would have left: the parcel as built by
services/meridian/command.py's commit after each step (the request bodies are the
load generator's own, Payloads.command), and one `command_requests` record per step with
the service's fingerprint and answer. tests/integration/test_live_stock.py compares them
with documents the service writes.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import Any

from surgesim.loadtests.actions import Payloads, stock_counts
from surgesim.loadtests.plan import COMMAND, LIFECYCLE_ROUTES, LivePlan

BATCH = 500
"""Firestore's limit of writes per batch."""

_EVENT = {"create_shipment": "ParcelCreated", "assign_driver": "ParcelAssigned",
          "mark_out_for_delivery": "ParcelOutForDelivery", "mark_delivered": "ParcelDelivered"}


def _changes(route: str, body: Any, now: dt.datetime) -> dict[str, Any]:
    """The fields command.py's handler for `route` passes to its commit."""
    from surgesim.services.meridian.model import price_cents

    if route == "create_shipment":
        changes = body.model_dump(mode="json", exclude={"requestId", "parcelId"}, exclude_none=True)
        changes["priceCents"] = price_cents(body.weightKg)
        return changes
    if route == "assign_driver":
        return {"driverId": body.driverId, "vehicleId": body.vehicleId}
    if route == "mark_out_for_delivery":
        return {"outForDeliveryAt": now}
    raise ValueError(f"no stock is built past {route}")


def parcel_documents(payloads: Payloads, chain_routes: list[str], now: dt.datetime) -> tuple[str, dict, dict[str, dict]]:
    """One stocked parcel: (parcel id, parcel document, {request id: command_requests
    document}) after the commands of chain_routes, in order, as the service writes them."""
    from surgesim.services.common import trace
    from surgesim.services.meridian.command import (AssignDriver, CreateShipment, OutForDelivery, _fingerprint)
    from surgesim.services.meridian.model import TRANSITIONS

    models = {"create_shipment": CreateShipment, "assign_driver": AssignDriver,
              "mark_out_for_delivery": OutForDelivery}
    by_route = {s.route: s for s in payloads.plan.all_sources if s.action == COMMAND}
    pid = payloads.book.new_id()
    doc: dict[str, Any] = {}
    requests: dict[str, dict] = {}
    for route in chain_routes:
        send = payloads.command(by_route[route], pid, now.timestamp())
        body = models[route].model_validate_json(send.body)
        rid = body.requestId
        event_type = _EVENT[route]
        event = {"type": event_type, "id": str(uuid.uuid4()), "traceparent": trace.new_trace().traceparent,
                 "requestId": rid, "at": now}
        changes = _changes(route, body, now)
        if route == "create_shipment":
            doc = {**changes, "parcelId": pid, "status": TRANSITIONS[event_type][0], "version": 1,
                   "createdAt": now, "updatedAt": now, "eventType": event_type, "lastEvent": event}
        else:
            doc = {**doc, **changes, "status": TRANSITIONS[event_type][0], "version": doc["version"] + 1,
                   "updatedAt": now, "eventType": event_type, "lastEvent": event}
        response = {"requestId": rid, "parcelId": pid, "status": doc["status"], "version": doc["version"],
                    "eventType": event_type, "eventId": event["id"]}
        requests[rid] = {"route": route, "parcelId": pid, "fingerprint": _fingerprint(route, pid, body),
                         "response": response, "createdAt": now, "expireAt": now + dt.timedelta(days=7)}
    return pid, doc, requests


def build_stock(plan: LivePlan, tag: str, now: dt.datetime | None = None) -> tuple[dict[str, list[str]], list]:
    """The stock for `plan` (counts: loadtests.actions.stock_counts): ({route: parcel ids
    ready for it}, [(collection, doc id, document)])."""
    from surgesim.services.meridian.model import COMMAND_REQUESTS, PARCELS

    now = now or dt.datetime.now(dt.timezone.utc)
    payloads = Payloads(plan, tag=tag, seed_offset=104729)  # its own stream: the run's bodies are unchanged
    have = {s.route for s in plan.all_sources if s.action == COMMAND}
    ready: dict[str, list[str]] = {}
    writes: list[tuple[str, str, dict]] = []
    for route, n in stock_counts(plan).items():
        k = LIFECYCLE_ROUTES.index(route)
        if any(r not in have for r in LIFECYCLE_ROUTES[:k]):
            continue  # no source of an earlier step to build the parcel's history from
        ids = ready.setdefault(route, [])
        for _ in range(n):
            pid, doc, requests = parcel_documents(payloads, list(LIFECYCLE_ROUTES[:k]), now)
            ids.append(pid)
            writes.append((PARCELS, pid, doc))
            writes += [(COMMAND_REQUESTS, rid, r) for rid, r in requests.items()]
    return ready, writes


def write_stock(db, plan: LivePlan, path: str | Path, tag: str) -> dict[str, Any]:
    """Write the stock into Firestore (`db`: a google.cloud.firestore.Client on the emulator)
    in batches, and stock.json at `path` for the load generator (loadtests.actions.load_stock)."""
    started = time.perf_counter()
    ready, writes = build_stock(plan, tag)
    built = time.perf_counter() - started
    for i in range(0, len(writes), BATCH):
        batch = db.batch()
        for collection, doc_id, doc in writes[i:i + BATCH]:
            batch.create(db.collection(collection).document(doc_id), doc)
        batch.commit()
    info = {"counts": {r: len(ids) for r, ids in ready.items()}, "documents": len(writes),
            "build_s": round(built, 3), "seconds": round(time.perf_counter() - started, 3), "method": "firestore_batch"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**info, "ready": ready}), encoding="utf-8")
    return info
