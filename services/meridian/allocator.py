"""Meridian's fleet allocator: reserves and releases vehicles for the dispatch saga, each
in one Firestore transaction on `vehicles/{vehicleId}`, idempotent on the dispatch id.

    POST /reservations {dispatchId, vehicleId?}     201 {dispatchId, vehicleId}; 409 none free
    POST /reservations/{dispatchId}/release         200 {released: bool}
    PUT  /vehicles/{vehicleId} {driverId?, driverPhone?}   register an available vehicle
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from fastapi import FastAPI, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from surgesim.services.common import gcp
from surgesim.services.common.runtime import create_app

from .model import E164, ID_PATTERN

VEHICLES, RESERVATIONS = "vehicles", "reservations"


class Reserve(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dispatchId: str = Field(pattern=ID_PATTERN)
    vehicleId: str | None = Field(None, pattern=ID_PATTERN)


class Vehicle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    driverId: str | None = Field(None, pattern=ID_PATTERN)
    driverPhone: str | None = Field(None, pattern=E164)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def build_app(db=None) -> FastAPI:
    deps: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        deps["db"] = db if db is not None else gcp.firestore_async()
        yield

    app = create_app("fleet-allocator", lifespan=lifespan, title="Meridian fleet allocator",
                     description=__doc__.split("\n\n")[0])

    async def try_reserve(dispatch_id: str, vehicle_id: str) -> dict | None:
        from google.cloud import firestore

        d = deps["db"]
        v_ref, r_ref = d.collection(VEHICLES).document(vehicle_id), d.collection(RESERVATIONS).document(dispatch_id)

        @firestore.async_transactional
        async def txn(t):
            res = await r_ref.get(transaction=t)
            veh = await v_ref.get(transaction=t)
            if res.exists and res.get("state") == "reserved":
                return res.to_dict()
            if not veh.exists or veh.get("status") != "available":
                return None
            now = _now()
            t.update(v_ref, {"status": "reserved", "reservedBy": dispatch_id, "updatedAt": now})
            doc = {"dispatchId": dispatch_id, "vehicleId": vehicle_id, "state": "reserved", "at": now,
                   "driverId": veh.to_dict().get("driverId"), "driverPhone": veh.to_dict().get("driverPhone")}
            t.set(r_ref, doc)
            return doc

        return await txn(d.transaction())

    @app.post("/reservations", status_code=201, responses={409: {"description": "no vehicle available"}})
    async def reserve(body: Reserve) -> dict[str, Any]:
        existing = await deps["db"].collection(RESERVATIONS).document(body.dispatchId).get()
        if existing.exists and existing.get("state") == "reserved":
            return _public(existing.to_dict())
        candidates = [body.vehicleId] if body.vehicleId else [
            s.id async for s in deps["db"].collection(VEHICLES).where("status", "==", "available").limit(10).stream()]
        for vid in candidates:
            doc = await try_reserve(body.dispatchId, vid)
            if doc is not None:
                app.state.log.info("reserved", extra={"dispatchId": body.dispatchId, "vehicleId": doc["vehicleId"]})
                return _public(doc)
        raise HTTPException(409, "no vehicle available")

    @app.post("/reservations/{dispatch_id}/release")
    async def release(dispatch_id: str = Path(pattern=ID_PATTERN)) -> dict[str, Any]:
        from google.cloud import firestore

        d = deps["db"]
        r_ref = d.collection(RESERVATIONS).document(dispatch_id)

        @firestore.async_transactional
        async def txn(t):
            res = await r_ref.get(transaction=t)
            if not res.exists or res.get("state") != "reserved":
                return False
            v_ref = d.collection(VEHICLES).document(res.get("vehicleId"))
            veh = await v_ref.get(transaction=t)
            if veh.exists and veh.get("reservedBy") == dispatch_id:
                t.update(v_ref, {"status": "available", "reservedBy": None, "updatedAt": _now()})
            t.update(r_ref, {"state": "released", "releasedAt": _now()})
            return True

        return {"dispatchId": dispatch_id, "released": await txn(d.transaction())}

    @app.put("/vehicles/{vehicle_id}")
    async def register(body: Vehicle, vehicle_id: str = Path(pattern=ID_PATTERN)) -> dict[str, Any]:
        doc = {"vehicleId": vehicle_id, "status": "available", "reservedBy": None, "updatedAt": _now(),
               **body.model_dump(exclude_none=True)}
        await deps["db"].collection(VEHICLES).document(vehicle_id).set(doc)
        return {"vehicleId": vehicle_id, "status": "available"}

    return app


def _public(doc: dict) -> dict:
    return {k: doc.get(k) for k in ("dispatchId", "vehicleId", "driverId", "driverPhone")}


app = build_app()
