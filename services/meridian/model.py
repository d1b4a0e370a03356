"""Meridian's parcel: its lifecycle, its events, and the shapes on the wire, shared by
the command service, the publisher and the reactors."""

from __future__ import annotations

EVENT_TOPIC = "logistics.events"
PARCELS = "parcels"
COMMAND_REQUESTS = "command_requests"

# status after each event, and the statuses each event may follow
TRANSITIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ParcelCreated": ("created", ()),
    "ParcelAssigned": ("assigned", ("created", "assigned")),
    "ParcelOutForDelivery": ("out_for_delivery", ("assigned",)),
    "ParcelDelivered": ("delivered", ("out_for_delivery",)),
}
PARCEL_EVENTS = tuple(TRANSITIONS)
OTHER_EVENTS = ("GeofenceCrossed", "RouteEtaUpdated")
ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
E164 = r"^\+[1-9][0-9]{6,14}$"


def price_cents(weight_kg: float) -> int:
    """What a delivery is billed: a base fee plus a per-kilogram rate."""
    return 500 + int(round(100 * weight_kg))
