"""The vehicle.telemetry ping: JSON {vehicleId, lat, lng, speed, heading, ts} (sim/fleet.py's
pings), with attribute vehicleId."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Ping:
    vehicle_id: str
    lat: float
    lng: float
    ts: str
    raw: dict


def parse_ping(data: bytes, attributes) -> Ping:
    """ValueError if the message is not a usable ping."""
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError("ping is not a JSON object")
    vid = body.get("vehicleId") or attributes.get("vehicleId")
    lat, lng = float(body["lat"]), float(body["lng"])
    if not vid or not (-90 <= lat <= 90 and -180 <= lng <= 180) or math.isnan(lat + lng):
        raise ValueError("ping needs vehicleId and a valid lat/lng")
    return Ping(str(vid), lat, lng, str(body.get("ts") or ""), body)


def receive_ping(message, counters) -> Ping | None:
    """Parse a pulled ping; an unusable one is nacked (it dead-letters after max attempts)."""
    try:
        ping = parse_ping(message.data, message.attributes)
    except (ValueError, KeyError, TypeError):
        counters["invalid"] += 1
        message.nack()
        return None
    return ping
