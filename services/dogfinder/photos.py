"""Dog Finder's photo checker: the target of an Eventarc Cloud Storage trigger on the
photo bucket (`google.cloud.storage.object.v1.finalized`). For each uploaded photo it
records what Cloud Storage says of the object (size, content type, MD5, generation) on the
sighting's Firestore document, as `photo`. The object name is
`sightings/YYYY/MM/DD/<sighting id>.<ext>` (app.py); other objects are acknowledged and
ignored. Idempotent: a redelivered event writes the same fields again.

The event is read as Eventarc delivers it: binary-mode CloudEvent, data the object's
StorageObjectData as JSON (services/common/cloudevents.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from surgesim.services.common import cloudevents, gcp
from surgesim.services.common.cloudevents import BadEvent
from surgesim.services.common.runtime import create_app

from .app import SIGHTINGS

FINALIZED = "google.cloud.storage.object.v1.finalized"
_NAME = re.compile(r"^sightings/\d{4}/\d{2}/\d{2}/(?P<sid>[A-Za-z0-9_-]{1,128})\.[a-z]+$")


def photo_record(attrs: dict[str, Any], data: Any) -> tuple[str, dict] | None:
    """(sighting id, `photo` fields) for a finalized sighting photo, None for another object."""
    if attrs.get("type") != FINALIZED:
        raise BadEvent(f"unexpected CloudEvent type {attrs.get('type')!r}; expected {FINALIZED}")
    if not isinstance(data, dict) or not data.get("name") or not data.get("bucket"):
        raise BadEvent("Storage event data must be a StorageObjectData object with bucket and name")
    m = _NAME.match(str(data["name"]))
    if m is None:
        return None
    return m["sid"], {"uri": f"gs://{data['bucket']}/{data['name']}", "size": int(data.get("size") or 0),
                      "contentType": data.get("contentType"), "md5Hash": data.get("md5Hash"),
                      "generation": str(data.get("generation")), "eventId": attrs["id"]}


def build_app(db=None) -> FastAPI:
    deps: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        deps["db"] = db if db is not None else gcp.firestore_async()
        yield

    app = create_app("dogfinder-photos", lifespan=lifespan, title="Dog Finder photo checker",
                     description=__doc__.split("\n\n")[0])
    log = app.state.log

    async def receive(request: Request) -> JSONResponse:
        try:
            attrs, data, ctype = cloudevents.parse(request.headers, await request.body())
            if isinstance(data, (bytes, bytearray)):
                if ctype != "application/json":
                    raise BadEvent(f"Storage event data must be application/json, not {ctype!r}")
                try:
                    data = json.loads(data)
                except ValueError:
                    raise BadEvent("Storage event data is not JSON") from None
            record = photo_record(attrs, data)
        except BadEvent as exc:
            log.warning("refused CloudEvent", extra={"reason": str(exc)})
            return JSONResponse({"error": str(exc)}, status_code=400)
        if record is None:
            return JSONResponse({"status": "not a sighting photo"})
        sid, photo = record
        photo["checkedAt"] = dt.datetime.now(dt.timezone.utc)
        # merge: the photo can land before or after the app writes the sighting's record
        await deps["db"].collection(SIGHTINGS).document(sid).set({"photo": photo}, merge=True)
        log.info("photo recorded", extra={"sightingId": sid, "bytes": photo["size"], "cloudEventId": attrs["id"]})
        return JSONResponse({"status": "recorded", "sightingId": sid})

    app.add_api_route("/", receive, methods=["POST"], summary="Eventarc Cloud Storage CloudEvent receiver")
    return app


app = build_app()
