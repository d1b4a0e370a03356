"""Dog Finder's matcher: a push consumer of `sightings`. Looks up to 20 lost-dog reports
of the same breed, and texts each owner whose dog was lost within RADIUS_KM of the
sighting (through OWNER_NOTIFY_URL, an SMS gateway), once per sighting and dog."""

from __future__ import annotations

import math
import os

from surgesim.services.common.apis import PermanentError, call_api
from surgesim.services.common.pubsub_push import PushEvent
from surgesim.services.common.reactor import ReactorContext, make_reactor

LOST_DOGS = "lost_dogs"


def km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lng2 - lng1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(h))


async def match(ctx: ReactorContext, event: PushEvent) -> dict:
    s = event.data
    try:
        sid, breed, lat, lng = str(s["sighting_id"]), str(s["breed"]), float(s["lat"]), float(s["lng"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentError(f"not a sighting: {exc}") from None
    radius = float(os.environ.get("RADIUS_KM", "5"))
    url = os.environ.get("OWNER_NOTIFY_URL", "http://127.0.0.1:8094").rstrip("/") + "/v1/messages"
    query = ctx.db.collection(LOST_DOGS).where("breed", "==", breed).limit(20)
    notified = []
    async for doc in query.stream():
        dog = doc.to_dict()
        if dog.get("found") or not dog.get("owner_phone"):
            continue
        if km(lat, lng, float(dog.get("lat", 0)), float(dog.get("lng", 0))) > radius:
            continue
        await call_api(ctx.http, url, {"to": dog["owner_phone"],
                                       "body": f"A {breed} like yours was seen near you: {s.get('photo_uri', '')}"},
                       idempotency_key=f"match-{sid}-{doc.id}", timeout=float(os.environ.get("NOTIFY_TIMEOUT_SECONDS", "10")))
        notified.append(doc.id)
    return {"notified": notified}


app = make_reactor("matcher", match, side_effect=True,
                   description="Matches a sighting against lost-dog reports and notifies the owner.")
