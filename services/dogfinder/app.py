"""Dog Finder: POST /sightings (multipart, with a photo). The photo goes to Cloud Storage,
the record to Firestore `sightings`, and an event to Pub/Sub `sightings` whose JSON
fields are exactly the columns of the BigQuery table `dogfinder.sightings` (the BigQuery
subscription writes it with use_table_schema). Answers 201; 400 on bad input.

A retry with the same X-Request-Id (or requestId, or sighting_id field) names the same sighting: the photo is overwritten with
the same bytes, the record is not duplicated, and the event is published again only if
the first attempt did not get that far.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from surgesim.services.common import gcp, trace
from surgesim.services.common.runtime import create_app

SIGHTINGS = "sightings"
_NS = uuid.UUID("d06f1de2-0000-4000-8000-000000000000")
_MAGIC = {b"\xff\xd8\xff": ("image/jpeg", "jpg"), b"\x89PNG\r\n\x1a\n": ("image/png", "png"),
          b"RIFF": ("image/webp", "webp"), b"GIF8": ("image/gif", "gif")}


class SightingCreated(BaseModel):
    sighting_id: str
    sighting_date: str
    seen_at: str
    breed: str
    lat: float
    lng: float
    photo_uri: str


class BadInput(ValueError):
    pass


def sniff(photo: bytes) -> tuple[str, str]:
    for magic, kind in _MAGIC.items():
        if photo.startswith(magic):
            return kind
    raise BadInput("photo: not a JPEG, PNG, WebP or GIF image")


def build_app(db=None, storage_client=None, publisher=None) -> FastAPI:
    deps: dict[str, Any] = {}
    bucket_name = os.environ.get("PHOTO_BUCKET", "dogfinder-photos")
    topic = os.environ.get("SIGHTINGS_TOPIC", SIGHTINGS)
    max_bytes = int(os.environ.get("MAX_PHOTO_BYTES", str(10 * 2**20)))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        deps["db"] = db if db is not None else gcp.firestore_async()
        deps["gcs"] = storage_client if storage_client is not None else gcp.storage()
        deps["pub"] = publisher if publisher is not None else gcp.publisher()
        yield
        if publisher is None:
            deps["pub"].stop()

    app = create_app("dogfinder-app", lifespan=lifespan, title="Dog Finder", description=__doc__.split("\n\n")[0])
    log = app.state.log

    @app.exception_handler(BadInput)
    async def _bad(request: Request, exc: BadInput) -> JSONResponse:
        return JSONResponse({"error": "invalid request", "detail": str(exc)}, status_code=400)

    @app.post("/sightings", status_code=201, response_model=SightingCreated,
              responses={400: {"description": "invalid sighting"}})
    async def post_sighting(
        photo: Annotated[UploadFile, File(description="JPEG, PNG, WebP or GIF")],
        breed: Annotated[str, Form(min_length=1, max_length=100)],
        lat: Annotated[float, Form(ge=-90, le=90)],
        lng: Annotated[float, Form(ge=-180, le=180)],
        seen_at: Annotated[dt.datetime | None, Form(description="when the dog was seen; default now")] = None,
        sighting_id: Annotated[str | None, Form(pattern=r"^[A-Za-z0-9_-]{1,128}$",
                                                description="the client's id; default derived from the request id")] = None,
        sighting_date: Annotated[dt.date | None, Form(description="if given, must be seen_at's UTC date")] = None,
        requestId: Annotated[str | None, Form(pattern=r"^[A-Za-z0-9_-]{1,128}$")] = None,
        x_request_id: Annotated[str | None, Header(alias="X-Request-Id", pattern=r"^[A-Za-z0-9_-]{1,128}$")] = None,
    ):
        data = await photo.read(max_bytes + 1)
        if not data:
            raise BadInput("photo: empty file")
        if len(data) > max_bytes:
            raise BadInput(f"photo: larger than {max_bytes} bytes")
        content_type, ext = sniff(data)
        seen = seen_at or dt.datetime.now(dt.timezone.utc)
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=dt.timezone.utc)
        seen = seen.astimezone(dt.timezone.utc)
        if seen > dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5):
            raise BadInput("seen_at: in the future")
        if seen.year < 2000:
            raise BadInput("seen_at: before 2000")
        if sighting_date is not None and sighting_date != seen.date():
            raise BadInput(f"sighting_date: {sighting_date} is not seen_at's UTC date {seen.date()}")
        if x_request_id and requestId and x_request_id != requestId:
            raise BadInput("X-Request-Id header and requestId field differ")
        request_id = x_request_id or requestId
        sid = sighting_id or (str(uuid.uuid5(_NS, request_id)) if request_id else str(uuid.uuid4()))
        object_name = f"sightings/{seen:%Y/%m/%d}/{sid}.{ext}"
        row = {"sighting_id": sid, "sighting_date": seen.date().isoformat(),
               "seen_at": seen.isoformat().replace("+00:00", "Z"), "breed": breed.strip(), "lat": lat, "lng": lng,
               "photo_uri": f"gs://{bucket_name}/{object_name}"}

        ref = deps["db"].collection(SIGHTINGS).document(sid)
        existing = await ref.get()
        if existing.exists and existing.get("published"):
            stored = existing.to_dict()
            return JSONResponse({k: stored[k] for k in SightingCreated.model_fields}, status_code=201,
                                headers={"Idempotent-Replayed": "true"})

        def upload() -> None:
            blob = deps["gcs"].bucket(bucket_name).blob(object_name)
            blob.upload_from_string(data, content_type=content_type)

        await asyncio.to_thread(upload)
        # merge: the photo checker (a Storage trigger) may already have recorded the photo
        await ref.set({**row, "seen_at_ts": seen, "photo_bytes": len(data), "published": False,
                       "createdAt": dt.datetime.now(dt.timezone.utc)}, merge=True)
        ctx = trace.current.get() or trace.new_trace()
        message_id = await gcp.publish(deps["pub"], topic, json.dumps(row).encode(), eventType="SightingReported",
                                       eventId=sid, breed=row["breed"][:100], traceparent=ctx.traceparent)
        await ref.update({"published": True, "messageId": message_id})
        log.info("sighting recorded", extra={"sightingId": sid, "messageId": message_id, "bytes": len(data)})
        return row

    return app


app = build_app()
