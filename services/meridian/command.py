"""Meridian's command service: the driver app's commands. Each one validates, commits the
parcel and a request record atomically (optimistic: preconditions on what it read), keyed
by the client's request id, and answers 202. The parcel
document's change (`lastEvent`) is the outbox the trigger turns into an event.

Idempotency: the request id (header X-Request-Id, or `requestId` in the body) names a
`command_requests` document written in the same commit as the parcel; a retry with
the same id returns the stored answer (header Idempotent-Replayed: true) and changes
nothing. The same id with a different request is 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import types
import uuid
import weakref
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from surgesim.services.common import fs_writes, gcp, trace
from surgesim.services.common.runtime import create_app, env_float

from .model import COMMAND_REQUESTS, E164, ID_PATTERN, PARCELS, TRANSITIONS, price_cents

_NS = uuid.UUID("6f1c1d1e-6d65-7269-6469-616e2d636d64")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class LatLng(Strict):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class Destination(LatLng):
    address: str = Field("", max_length=500)


class Recipient(Strict):
    name: str = Field(min_length=1, max_length=200)
    phone: str = Field(pattern=E164, description="E.164, e.g. +447700900123")


class CreateShipment(Strict):
    requestId: str | None = Field(None, pattern=ID_PATTERN)
    parcelId: str | None = Field(None, pattern=ID_PATTERN, description="default: derived from the request id")
    shipperId: str = Field(pattern=ID_PATTERN)
    recipient: Recipient
    destination: Destination
    origin: LatLng | None = None
    weightKg: float = Field(gt=0, le=1000)


class AssignDriver(Strict):
    requestId: str | None = Field(None, pattern=ID_PATTERN)
    driverId: str = Field(pattern=ID_PATTERN)
    vehicleId: str = Field(pattern=ID_PATTERN)


class OutForDelivery(Strict):
    requestId: str | None = Field(None, pattern=ID_PATTERN)


class Delivered(Strict):
    requestId: str | None = Field(None, pattern=ID_PATTERN)
    signedBy: str | None = Field(None, max_length=200)
    photoUri: str | None = Field(None, max_length=2000)
    deliveredAt: dt.datetime | None = None


class Accepted(BaseModel):
    requestId: str
    parcelId: str
    status: str
    version: int
    eventType: str
    eventId: str


class Problem(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _fingerprint(route: str, parcel_id: str | None, body: BaseModel | None) -> str:
    data = body.model_dump(mode="json", exclude={"requestId"}) if body is not None else {}
    return hashlib.sha256(json.dumps([route, parcel_id, data], sort_keys=True).encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


_ABSENT = types.SimpleNamespace(exists=False)
"""What a blind attempt assumes it would have read: neither document exists."""


class Contention(Exception):
    """Every attempt lost to a concurrent command on the same parcel."""


class CommandStore:
    """Each command's read-validate-write, as one atomic commit (Firestore, async client).

    Optimistic rather than a client transaction: one BatchGet of the request and parcel
    documents, then one commit whose preconditions say "neither changed since I read them"
    (the parcel's update time, or that it or the request does not exist yet). A concurrent
    writer fails the precondition, and the command reads again and re-decides. That is
    two round trips where the client's transaction takes three (begin, BatchGet, commit),
    and it holds no document lock on the server between them. A new shipment skips the
    read: one round trip.
    """

    def __init__(self, db, request_ttl_s: float = 7 * 86400) -> None:
        self.db = db
        self.request_ttl_s = request_ttl_s
        self.max_attempts = int(env_float("COMMAND_TXN_ATTEMPTS", 5))
        # Commands on one parcel inside this instance queue here rather than racing each
        # other's preconditions; only other instances' commands can still conflict.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def apply(self, request_id: str, route: str, parcel_id: str, event_type: str, body: BaseModel | None,
                    changes: dict[str, Any]) -> tuple[dict, bool]:
        from google.api_core import exceptions as gexc

        lock = self._locks.get(parcel_id)
        if lock is None:
            lock = self._locks[parcel_id] = asyncio.Lock()
        async with lock:
            if event_type == "ParcelCreated":
                # A new shipment needs no read: both documents must be absent, which the
                # commit's own preconditions check. Only a retry or a taken parcel id
                # fails it, and the read below then tells which.
                with contextlib.suppress(gexc.AlreadyExists):
                    return await self._attempt(request_id, route, parcel_id, event_type, body, changes, blind=True)
            for attempt in range(self.max_attempts):
                try:
                    return await self._attempt(request_id, route, parcel_id, event_type, body, changes)
                except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound, gexc.Aborted):
                    # someone else wrote one of the two documents since the read
                    if attempt + 1 < self.max_attempts:
                        await asyncio.sleep(min(0.2, 0.005 * 2 ** attempt))
        raise Contention(parcel_id)

    async def _attempt(self, request_id: str, route: str, parcel_id: str, event_type: str, body: BaseModel | None,
                       changes: dict[str, Any], blind: bool = False) -> tuple[dict, bool]:
        fingerprint = _fingerprint(route, parcel_id, body)
        req_ref = self.db.collection(COMMAND_REQUESTS).document(request_id)
        parcel_ref = self.db.collection(PARCELS).document(parcel_id)
        new_status, allowed_from = TRANSITIONS[event_type]
        ctx = trace.current.get() or trace.new_trace()

        if blind:
            req = parcel = _ABSENT
        else:
            snaps = {snap.reference.path: snap async for snap in self.db.get_all([req_ref, parcel_ref])}
            req, parcel = snaps[req_ref.path], snaps[parcel_ref.path]
        if req.exists:
            stored = req.to_dict()
            if stored.get("fingerprint") != fingerprint:
                raise Problem(409, f"request id {request_id!r} was already used for a different request ({stored.get('route')})")
            return stored["response"], True
        now = _now()
        event = {"type": event_type, "id": str(uuid.uuid4()), "traceparent": ctx.traceparent,
                 "requestId": request_id, "at": now}
        batch = self.db.batch()
        if event_type == "ParcelCreated":
            if parcel.exists:
                raise Problem(409, f"parcel {parcel_id} already exists")
            doc = {**changes, "parcelId": parcel_id, "status": new_status, "version": 1,
                   "createdAt": now, "updatedAt": now, "eventType": event_type, "lastEvent": event}
            fs_writes.create(batch, parcel_ref, doc)
        else:
            if not parcel.exists:
                raise Problem(404, f"parcel {parcel_id} not found")
            current = parcel.to_dict()
            if current.get("status") not in allowed_from:
                raise Problem(409, f"parcel {parcel_id} is {current.get('status')}; {event_type} needs it to be "
                                   + " or ".join(allowed_from))
            doc = {**changes, "status": new_status, "version": int(current.get("version", 0)) + 1,
                   "updatedAt": now, "eventType": event_type, "lastEvent": event}
            fs_writes.update(batch, parcel_ref, doc, parcel.update_time)
        response = {"requestId": request_id, "parcelId": parcel_id, "status": new_status,
                    "version": doc["version"], "eventType": event_type, "eventId": event["id"]}
        fs_writes.create(batch, req_ref, {"route": route, "parcelId": parcel_id, "fingerprint": fingerprint,
                                          "response": response, "createdAt": now,
                                          "expireAt": now + dt.timedelta(seconds=self.request_ttl_s)})
        await batch.commit()
        return response, False


def build_app(db=None) -> FastAPI:
    holder: dict[str, CommandStore] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        holder["store"] = CommandStore(db if db is not None else gcp.firestore_async())
        yield

    app = create_app("command", lifespan=lifespan, title="Meridian command service", description=__doc__.split("\n\n")[0])
    log = app.state.log

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status)

    async def run(route: str, parcel_id: str, event_type: str, body: BaseModel | None, header_id: str | None,
                  changes: dict[str, Any]) -> JSONResponse:
        body_id = getattr(body, "requestId", None)
        if header_id and body_id and header_id != body_id:
            raise Problem(400, "X-Request-Id header and requestId field differ")
        request_id = header_id or body_id or str(uuid.uuid4())
        try:
            response, replayed = await holder["store"].apply(request_id, route, parcel_id, event_type, body, changes)
        except Contention:  # lost every attempt to concurrent commands on this parcel
            log.warning("command contention", extra={"parcelId": parcel_id, "requestId": request_id})
            return JSONResponse({"error": "too much contention on this parcel; retry"}, status_code=503,
                                headers={"Retry-After": "1"})
        log.info("command accepted" if not replayed else "command replayed",
                 extra={"route": route, "requestId": request_id, "parcelId": parcel_id, "eventType": event_type,
                        "eventId": response["eventId"], "replayed": replayed})
        return JSONResponse(response, status_code=202, headers={"Idempotent-Replayed": "true"} if replayed else {})

    responses = {400: {"description": "invalid request"}, 404: {"description": "no such parcel"},
                 409: {"description": "wrong state, or request id reused"}, 503: {"description": "contention, retry"}}
    ParcelId = Path(pattern=ID_PATTERN)
    RequestId = Header(None, alias="X-Request-Id", pattern=ID_PATTERN)

    @app.post("/shipments", status_code=202, response_model=Accepted, responses=responses)
    async def create_shipment(body: CreateShipment, x_request_id: str | None = RequestId):
        request_id = x_request_id or body.requestId
        parcel_id = body.parcelId or (str(uuid.uuid5(_NS, request_id)) if request_id else str(uuid.uuid4()))
        changes = body.model_dump(mode="json", exclude={"requestId", "parcelId"}, exclude_none=True)
        changes["priceCents"] = price_cents(body.weightKg)
        return await run("create_shipment", parcel_id, "ParcelCreated", body, x_request_id, changes)

    @app.post("/parcels/{parcel_id}/assign", status_code=202, response_model=Accepted, responses=responses)
    async def assign_driver(body: AssignDriver, parcel_id: str = ParcelId, x_request_id: str | None = RequestId):
        return await run("assign_driver", parcel_id, "ParcelAssigned", body, x_request_id,
                         {"driverId": body.driverId, "vehicleId": body.vehicleId})

    @app.post("/parcels/{parcel_id}/out-for-delivery", status_code=202, response_model=Accepted, responses=responses)
    async def mark_out_for_delivery(body: OutForDelivery | None = None, parcel_id: str = ParcelId,
                                    x_request_id: str | None = RequestId):
        return await run("mark_out_for_delivery", parcel_id, "ParcelOutForDelivery", body, x_request_id,
                         {"outForDeliveryAt": _now()})

    @app.post("/parcels/{parcel_id}/delivered", status_code=202, response_model=Accepted, responses=responses)
    async def mark_delivered(body: Delivered | None = None, parcel_id: str = ParcelId,
                             x_request_id: str | None = RequestId):
        body = body or Delivered()
        changes: dict[str, Any] = {"deliveredAt": body.deliveredAt or _now()}
        if body.signedBy:
            changes["signedBy"] = body.signedBy
        if body.photoUri:
            changes["photoUri"] = body.photoUri
        return await run("mark_delivered", parcel_id, "ParcelDelivered", body, x_request_id, changes)

    @app.get("/parcels/{parcel_id}", responses={404: {"description": "no such parcel"}})
    async def get_parcel(parcel_id: str = ParcelId) -> dict[str, Any]:
        snap = await holder["store"].db.collection(PARCELS).document(parcel_id).get()
        if not snap.exists:
            raise HTTPException(404, f"parcel {parcel_id} not found")
        return json.loads(json.dumps(snap.to_dict(), default=str))

    return app


app = build_app()
