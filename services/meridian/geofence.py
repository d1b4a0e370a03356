"""Meridian's geofence detector: pulls vehicle.telemetry and publishes GeofenceCrossed to
logistics.events when a vehicle enters or leaves a fence (circles or polygons).

Fences: env GEOFENCES (JSON) or GEOFENCES_FILE, a list of
`{"id": "depot-1", "circle": {"lat": .., "lng": .., "radius_m": ..}}` or
`{"id": "zone-a", "polygon": [[lat, lng], ...]}`; default: 24 depots of 400 m around
central London. A vehicle's first ping only records where it is. State is per process:
with several instances, pings of one vehicle should share an ordering key.
Env: SUBSCRIPTION (telemetry-geofence), EVENT_TOPIC (logistics.events), GEOFENCES.
"""

from __future__ import annotations

import json
import math
import os
import threading
import uuid

from surgesim.services.common import gcp, trace
from surgesim.services.common.puller import make_pull_app

from .model import EVENT_TOPIC
from .telemetry import receive_ping


def default_fences() -> list[dict]:
    out = []
    for i in range(24):
        a = 2 * math.pi * i / 24
        r = 0.02 + 0.06 * (i % 3)
        out.append({"id": f"depot-{i:02d}", "circle": {"lat": 51.5072 + r * math.cos(a),
                                                     "lng": -0.1276 + 1.6 * r * math.sin(a), "radius_m": 400}})
    return out


def load_fences() -> list[dict]:
    if os.environ.get("GEOFENCES"):
        return json.loads(os.environ["GEOFENCES"])
    if os.environ.get("GEOFENCES_FILE"):
        with open(os.environ["GEOFENCES_FILE"]) as f:
            return json.load(f)
    return default_fences()


def _metres(lat1, lng1, lat2, lng2) -> float:
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lng2 - lng1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6_371_000.0 * 2 * math.asin(math.sqrt(h))


def inside(fence: dict, lat: float, lng: float) -> bool:
    if "circle" in fence:
        c = fence["circle"]
        return _metres(lat, lng, c["lat"], c["lng"]) <= c["radius_m"]
    poly, hit = fence["polygon"], False  # ray casting
    for (a_lat, a_lng), (b_lat, b_lng) in zip(poly, poly[1:] + poly[:1]):
        if (a_lng > lng) != (b_lng > lng) and lat < (b_lat - a_lat) * (lng - a_lng) / (b_lng - a_lng) + a_lat:
            hit = not hit
    return hit


def crossings(fences: list[dict], before: frozenset[str] | None, lat: float, lng: float) -> tuple[frozenset[str], list[tuple[str, str]]]:
    now = frozenset(f["id"] for f in fences if inside(f, lat, lng))
    if before is None:
        return now, []
    return now, [(fid, "entered") for fid in sorted(now - before)] + [(fid, "exited") for fid in sorted(before - now)]


_state: dict[str, frozenset[str]] = {}
_lock = threading.Lock()
_fences = load_fences()
_publisher = None


def on_message(message, counters) -> None:
    global _publisher
    ping = receive_ping(message, counters)
    if ping is None:
        return
    with _lock:
        counters["received"] += 1
        before = _state.get(ping.vehicle_id)
        now, events = crossings(_fences, before, ping.lat, ping.lng)
        _state[ping.vehicle_id] = now
    if not events:
        message.ack()
        return
    if _publisher is None:
        _publisher = gcp.publisher()
    parent = trace.parse_traceparent(message.attributes.get("traceparent"))
    ctx = parent.child() if parent else trace.new_trace()
    futures = []
    for fence_id, direction in events:
        eid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"geofence/{message.message_id}/{fence_id}"))
        data = {"eventId": eid, "eventType": "GeofenceCrossed", "vehicleId": ping.vehicle_id, "fenceId": fence_id,
                "direction": direction, "lat": ping.lat, "lng": ping.lng, "at": ping.ts,
                "driverId": ping.raw.get("driverId")}
        futures.append(_publisher.publish(gcp.topic_path(os.environ.get("EVENT_TOPIC", EVENT_TOPIC)),
                                          json.dumps(data).encode(), eventType="GeofenceCrossed", eventId=eid,
                                          vehicleId=ping.vehicle_id, fenceId=fence_id, traceparent=ctx.traceparent))
    remaining = [len(futures)]

    def done(f) -> None:
        # ack only once every event is out: a failed publish redelivers the ping (same event ids)
        if f.exception() is not None:
            with _lock:
                counters["publish_errors"] += 1
                if _state.get(ping.vehicle_id) == now and before is not None:
                    _state[ping.vehicle_id] = before  # so the redelivered ping crosses again
            message.nack()
            return
        with _lock:
            remaining[0] -= 1
            last = remaining[0] == 0
            if last:
                counters["crossings"] += len(futures)
        if last:
            message.ack()

    for f in futures:
        f.add_done_callback(done)


app = make_pull_app("geofence", "telemetry-geofence", on_message, description=__doc__.split("\n\n")[0])
app.state.gauges = lambda: {"vehicles": len(_state), "fences": len(_fences)}
