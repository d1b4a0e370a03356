"""Meridian's dispatch saga, as a small workflow runner service (Cloud Workflows'
stand-in): reserve → optimise → assign → confirm, each step with its own timeout,
retries and backoff; when a step after reserve fails for good, the compensation
release_and_requeue releases the vehicle and puts the request back on dispatch.requests.

    POST /executions {dispatchId, parcelId, driverId?}    run one execution, answer its outcome
    POST /pubsub                                          the same, from the dispatch-sub push

Outcome: 200 `succeeded` or `compensated` (the request was requeued, or dropped after
MAX_REQUEUES); 500 when the compensation itself failed (push: nack, Pub/Sub retries).
Executions are recorded in Firestore `executions/{dispatchId}`.

Env: ALLOCATOR_URL, ROUTE_OPTIMIZER_URL, COMMAND_URL, SMS_GATEWAY_URL, DISPATCH_TOPIC
(dispatch.requests), MAX_REQUEUES (3), BACKOFF_SCALE (1.0: multiplies every backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from surgesim.services.common import gcp, trace
from surgesim.services.common.apis import PermanentError, RetryableError, call_api
from surgesim.services.common.pubsub_push import PoisonMessage, parse_envelope
from surgesim.services.common.runtime import create_app

from .model import ID_PATTERN


@dataclass(frozen=True)
class StepSpec:
    name: str
    timeout: float
    retries: int
    backoff: float


# As meridian.yaml's `workflows: dispatch`.
STEPS = {
    "reserve": StepSpec("reserve", 10, 3, 1),
    "optimise": StepSpec("optimise", 30, 2, 2),
    "assign": StepSpec("assign", 10, 3, 1),
    "confirm": StepSpec("confirm", 10, 3, 2),
    "release_and_requeue": StepSpec("release_and_requeue", 10, 5, 1),
}


class DispatchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    dispatchId: str = Field(pattern=ID_PATTERN)
    parcelId: str = Field(pattern=ID_PATTERN)
    driverId: str | None = Field(None, pattern=ID_PATTERN)
    requeues: int = Field(0, ge=0)
    originalId: str | None = Field(None, pattern=ID_PATTERN)


class StepFailed(Exception):
    def __init__(self, step: str, cause: Exception) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step


def _url(var: str) -> str:
    return os.environ.get(var, "http://127.0.0.1:1").rstrip("/")


class Saga:
    def __init__(self, http: httpx.AsyncClient, db, publisher_factory: Callable[[], Any], log) -> None:
        self.http, self.db, self.publisher_factory, self.log = http, db, publisher_factory, log
        self.scale = float(os.environ.get("BACKOFF_SCALE", "1"))

    async def step(self, spec: StepSpec, fn: Callable[[float], Awaitable[Any]], trail: list) -> Any:
        last: Exception | None = None
        for attempt in range(spec.retries + 1):
            try:
                result = await asyncio.wait_for(fn(spec.timeout), spec.timeout)
                trail.append({"step": spec.name, "attempt": attempt + 1, "ok": True})
                return result
            except PermanentError as exc:
                trail.append({"step": spec.name, "attempt": attempt + 1, "ok": False, "error": str(exc)})
                raise StepFailed(spec.name, exc) from exc
            except (RetryableError, asyncio.TimeoutError) as exc:
                last = exc
                trail.append({"step": spec.name, "attempt": attempt + 1, "ok": False, "error": str(exc) or "timeout"})
                if attempt < spec.retries:
                    await asyncio.sleep(spec.backoff * (2 ** attempt) * self.scale)
        raise StepFailed(spec.name, last or RuntimeError("failed"))

    async def run(self, req: DispatchRequest) -> dict:
        trail: list[dict] = []
        did = req.dispatchId
        reservation: dict = {}

        async def reserve(t):
            nonlocal reservation
            reservation = await call_api(self.http, _url("ALLOCATOR_URL") + "/reservations", {"dispatchId": did},
                                         idempotency_key=f"dispatch-{did}-reserve", timeout=t)
            return reservation

        async def optimise(t):
            return await call_api(self.http, _url("ROUTE_OPTIMIZER_URL") + "/optimise",
                                  {"dispatchId": did, "vehicleId": reservation.get("vehicleId"), "parcelIds": [req.parcelId]},
                                  idempotency_key=f"dispatch-{did}-optimise", timeout=t)

        async def assign(t):
            driver = req.driverId or reservation.get("driverId") or f"driver-of-{reservation.get('vehicleId')}"
            resp = await self.http.post(_url("COMMAND_URL") + f"/parcels/{req.parcelId}/assign",
                                        json={"driverId": driver, "vehicleId": reservation.get("vehicleId")},
                                        headers={"X-Request-Id": f"dispatch-{did}-assign",
                                                 "traceparent": (trace.current.get() or trace.new_trace()).child().traceparent},
                                        timeout=t)
            if resp.status_code == 202:
                return resp.json()
            if resp.status_code >= 500 or resp.status_code == 429:
                raise RetryableError(f"command answered {resp.status_code}")
            raise PermanentError(f"command answered {resp.status_code}: {resp.text[:200]}")

        async def confirm(t):
            phone = reservation.get("driverPhone") or os.environ.get("DEFAULT_DRIVER_PHONE", "+447700900000")
            return await call_api(self.http, _url("SMS_GATEWAY_URL") + "/v1/messages",
                                  {"to": phone, "body": f"Dispatch {did}: parcel {req.parcelId} is yours."},
                                  idempotency_key=f"dispatch-{did}-confirm", timeout=t)

        await self.record(did, {"state": "running", "request": req.model_dump(), "startedAt": _now()})
        try:
            await self.step(STEPS["reserve"], reserve, trail)
        except StepFailed as exc:
            # nothing to undo: the request goes back on the queue as it is
            return await self.compensate(req, trail, exc, release=False)
        try:
            for name, fn in (("optimise", optimise), ("assign", assign), ("confirm", confirm)):
                await self.step(STEPS[name], fn, trail)
        except StepFailed as exc:
            return await self.compensate(req, trail, exc, release=True)
        outcome = {"dispatchId": did, "state": "succeeded", "vehicleId": reservation.get("vehicleId"), "trail": trail}
        await self.record(did, {**outcome, "endedAt": _now()})
        return outcome

    async def compensate(self, req: DispatchRequest, trail: list, cause: StepFailed, release: bool) -> dict:
        did = req.dispatchId
        max_requeues = int(os.environ.get("MAX_REQUEUES", "3"))

        async def release_and_requeue(t):
            if release:
                await call_api(self.http, _url("ALLOCATOR_URL") + f"/reservations/{did}/release", {},
                               idempotency_key=f"dispatch-{did}-release", timeout=t)
            if req.requeues < max_requeues:
                # the retry is a new dispatch (its own reservation), tied to the first by originalId
                base = req.originalId or req.dispatchId
                nxt = req.model_copy(update={"requeues": req.requeues + 1, "originalId": base,
                                             "dispatchId": f"{base}-r{req.requeues + 1}"})
                try:
                    await gcp.publish(self.publisher_factory(), os.environ.get("DISPATCH_TOPIC", "dispatch.requests"),
                                      json.dumps(nxt.model_dump()).encode(), dispatchId=nxt.dispatchId,
                                      parcelId=nxt.parcelId, requeues=str(nxt.requeues))
                except Exception as exc:  # the emulator or Pub/Sub is down: retry the compensation
                    raise RetryableError(f"requeue publish failed: {exc}") from exc
                return nxt.dispatchId
            return None

        self.log.warning("saga step failed; compensating", extra={"dispatchId": did, "step": cause.step, "error": str(cause)})
        requeued = await self.step(STEPS["release_and_requeue"], release_and_requeue, trail)
        outcome = {"dispatchId": did, "state": "compensated", "failedStep": cause.step, "requeuedAs": requeued,
                   "trail": trail}
        await self.record(did, {**outcome, "endedAt": _now()})
        return outcome

    async def record(self, did: str, fields: dict) -> None:
        with contextlib.suppress(Exception):  # the record is for inspection; never fail the saga on it
            await self.db.collection("executions").document(did).set(json.loads(json.dumps(fields, default=str)), merge=True)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def build_app() -> FastAPI:
    deps: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        http = httpx.AsyncClient(trust_env=False)
        pub: dict[str, Any] = {}

        def publisher():
            if "p" not in pub:
                pub["p"] = gcp.publisher()
            return pub["p"]

        deps["saga"] = Saga(http, gcp.firestore_async(), publisher, app.state.log)
        yield
        await http.aclose()
        if "p" in pub:
            pub["p"].stop()

    app = create_app("dispatch", lifespan=lifespan, title="Meridian dispatch saga", description=__doc__.split("\n\n")[0])

    async def execute(req: DispatchRequest) -> JSONResponse:
        try:
            outcome = await deps["saga"].run(req)
        except StepFailed as exc:
            return JSONResponse({"dispatchId": req.dispatchId, "state": "failed", "error": str(exc)}, status_code=500)
        return JSONResponse(outcome, status_code=200)

    @app.post("/executions", responses={500: {"description": "the compensation failed"}})
    async def executions(req: DispatchRequest):
        return await execute(req)

    @app.post("/pubsub", include_in_schema=False)
    async def push(request: Request):
        try:
            event = parse_envelope(await request.body())
            req = DispatchRequest.model_validate(event.data)
        except (PoisonMessage, ValueError) as exc:
            return JSONResponse({"status": "poison", "reason": str(exc)[:300]}, status_code=400)
        return await execute(req)

    return app


app = build_app()
