"""What each scheduled send carries on the wire, shared by the Locust users and the fleet
driver so both send byte-for-byte the same kinds of request.

Service contracts (services/meridian/command.py, services/dogfinder/app.py; both checked
by the integration tests against the real services):

- command service: JSON bodies with `requestId` and the header `X-Request-Id` (equal).
  create_shipment POST /shipments {requestId, parcelId, shipperId, recipient{name, phone},
  destination{lat, lng, address}, weightKg}; assign POST /parcels/{id}/assign {requestId,
  driverId, vehicleId}; out for delivery and delivered POST {requestId} (+ signedBy).
  Parcel ids `P<run tag><6 digits>` (unique per run, so re-runs against the same Firestore
  do not collide), driver ids `D0042`, vehicle ids `V00042` (sim/fleet.py's).
- a templated source (surgesim/templates.py): exactly what its template renders (Dog
  Finder's multipart sightings are one, in scenarios/dogfinder_viral.yaml).
- Pub/Sub: the emulator's REST publish, base64 data, attributes.

Every send carries its intended send time (epoch seconds): header `X-Intended-Time`,
message attribute `intendedTime`.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import io
import json
import math
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surgesim.loadtests.plan import COMMAND, LIFECYCLE_ROUTES, PUBLISH, REQUEST, LivePlan, LiveSource
from surgesim.sim.fleet import Fleet, vehicle_id

INTENDED_HEADER = "X-Intended-Time"
INTENDED_ATTRIBUTE = "intendedTime"
REQUEST_ID_HEADER = "X-Request-Id"
MAX_PUBLISH_BATCH = 1000
"""Pub/Sub's limit of messages per publish request."""


def stamp(epoch_s: float) -> str:
    """The wire form of an intended time: epoch seconds with microseconds."""
    return f"{epoch_s:.6f}"


def run_tag(n: int = 5) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


# ---- Pub/Sub REST ------------------------------------------------------------------------


def publish_path(project: str, topic: str) -> str:
    return f"/v1/projects/{project}/topics/{topic}:publish"


def emulator_base(emulator_host: str) -> str:
    """http://host:port from PUBSUB_EMULATOR_HOST (host:port)."""
    return "http://" + emulator_host.removeprefix("http://").rstrip("/")


def publish_url(emulator_host: str, project: str, topic: str) -> str:
    """`POST http://$PUBSUB_EMULATOR_HOST/v1/projects/P/topics/T:publish`."""
    return emulator_base(emulator_host) + publish_path(project, topic)


def publish_body(messages: list[tuple]) -> bytes:
    """The REST publish request for up to 1,000 (data, attributes[, ordering key]) messages."""
    if len(messages) > MAX_PUBLISH_BATCH:
        raise ValueError(f"a publish request holds at most {MAX_PUBLISH_BATCH} messages, got {len(messages)}")
    return json.dumps({"messages": [_rest_message(m) for m in messages]}, separators=(",", ":")).encode()


def _rest_message(m: tuple) -> dict:
    """(data, attributes[, ordering key]) as the REST API's PubsubMessage."""
    out = {"data": base64.b64encode(m[0]).decode("ascii"), "attributes": m[1]}
    if len(m) > 2 and m[2]:
        out["orderingKey"] = m[2]
    return out


# ---- photos ------------------------------------------------------------------------------


_PHOTOS: list[bytes] = []


def photo_jpeg(i: int = 0) -> bytes:
    """A small real JPEG (96x72, a blurry 'dog' blob on grass); 8 variants, cached."""
    if not _PHOTOS:
        from PIL import Image, ImageDraw

        rng = np.random.default_rng(12345)
        for k in range(8):
            grass = (rng.random((72, 96, 3)) * [60, 120, 50] + [30, 90, 20]).astype(np.uint8)
            img = Image.fromarray(grass, "RGB")
            d = ImageDraw.Draw(img)
            x, y = 20 + 6 * k, 22 + 2 * k
            coat = tuple(int(c) for c in rng.integers(60, 220, 3))
            d.ellipse([x, y, x + 44, y + 26], fill=coat)
            d.ellipse([x + 36, y - 10, x + 56, y + 8], fill=coat)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=70)
            _PHOTOS.append(buf.getvalue())
    return _PHOTOS[i % len(_PHOTOS)]


# ---- parcels -----------------------------------------------------------------------------


class ParcelBook:
    """Parcel ids that follow their lifecycle in order: a parcel is offered to a route only
    after the previous route's command for it was accepted (2xx), so every command the load
    generator sends is one the service should accept.

    When a route's arrival finds no parcel ready for it, the send is `starved` (counted, not
    sent): the scenario asked for more of that step than parcels reached it. `stock` parcels
    pre-positioned before the run (see stock_counts) keep that rare."""

    def __init__(self, tag: str):
        self.tag = tag
        self._n = 0
        self.ready: dict[str, collections.deque[str]] = {r: collections.deque() for r in LIFECYCLE_ROUTES[1:]}

    def new_id(self) -> str:
        self._n += 1
        return f"P{self.tag}{self._n:06d}"

    def take(self, route: str) -> str | None:
        if route == LIFECYCLE_ROUTES[0]:
            return self.new_id()
        pool = self.ready[route]
        return pool.popleft() if pool else None

    def finish(self, route: str, parcel_id: str, ok: bool) -> None:
        k = LIFECYCLE_ROUTES.index(route)
        if ok:
            if k + 1 < len(LIFECYCLE_ROUTES):
                self.ready[LIFECYCLE_ROUTES[k + 1]].append(parcel_id)
        elif k > 0:
            self.ready[route].appendleft(parcel_id)  # try this parcel again on the next arrival

    def backlog(self) -> dict[str, int]:
        return {r: len(q) for r, q in self.ready.items()}


def stock_counts(plan: LivePlan, duration_s: float | None = None) -> dict[str, int]:
    """Parcels to pre-position ready for each lifecycle route before the clock starts: the
    expected number of that route's commands in the first duration_s wall seconds plus three
    standard deviations (Poisson), so every arrival finds a parcel whatever the steps before
    it managed (dispatch_wave's delivered surge has no out-for-delivery surge to feed it)."""
    end = plan.duration_s if duration_s is None else min(duration_s, plan.duration_s)
    expected: dict[str, float] = {}
    for s in plan.sources:
        if s.action == COMMAND:
            expected[s.route] = expected.get(s.route, 0.0) + plan.expected_count(s, 0.0, end)
    return {route: int(math.ceil(expected[route] + 3.0 * math.sqrt(expected[route])))
            for route in LIFECYCLE_ROUTES[1:] if route in expected}


def load_stock(book: "ParcelBook", path: str | Path, share: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Put the parcels a live harness wrote before the clock (surgesim/live/stock.py's
    stock.json: {"ready": {route: [parcel ids]}, ...}) at the front of the book's queues.
    share (k, n): this process takes every n-th parcel from the k-th (one of n workers)."""
    info = json.loads(Path(path).read_text(encoding="utf-8"))
    k, n = share
    for route, ids in info.get("ready", {}).items():
        book.ready[route].extendleft(reversed(ids[k::n]))
    return {k: v for k, v in info.items() if k != "ready"}


# ---- the sends -----------------------------------------------------------------------------


@dataclass
class Send:
    """One scheduled send, ready for the wire."""

    source: LiveSource
    intended: float
    """Epoch seconds it should have been sent at."""
    method: str = "POST"
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    message: tuple | None = None
    """(data, attributes[, ordering key]) for a publish."""
    parcel_id: str | None = None
    stock: bool = False
    """Sent before the clock starts to pre-position a parcel; not measured."""

    @property
    def label(self) -> str:
        return self.source.label


def _templated(source: LiveSource) -> bool:
    from surgesim.templates import payload_kind

    kind = payload_kind(source.source)
    return kind is not None and getattr(source.source, kind).templated and source.source.workflow is None


def http_headers(request_id: str, intended: float, content_type: str = "application/json") -> dict[str, str]:
    return {REQUEST_ID_HEADER: request_id, INTENDED_HEADER: stamp(intended), "Content-Type": content_type}


class Payloads:
    """Builds the Sends of one generator process: seeded, with its own parcel book and a
    fleet of vehicles x rate_scale moving in scenario time."""

    def __init__(self, plan: LivePlan, tag: str | None = None, seed_offset: int = 0):
        self.plan = plan
        self.tag = tag or run_tag()
        self.rng = np.random.default_rng([plan.seed, 7919, seed_offset])
        self.book = ParcelBook(self.tag)
        self._seq = 0
        self.fleets: dict[str, Fleet] = {}
        for s in plan.sources:
            if s.action == PUBLISH and s.source.kind == "fleet":
                n = max(1, int(round(s.source.vehicles * plan.scale_of(s))))
                self.fleets[s.name] = Fleet(n, seed=plan.seed)
        self._fleet_wall = {name: 0.0 for name in self.fleets}
        self._fleet_pings: dict[str, list[dict]] = {}
        self.drivers = max([f.n for f in self.fleets.values()] + [50])
        self.templates = {s.name: self._compile(s) for s in plan.all_sources if _templated(s)}
        """Per templated source, its payload compiled once (surgesim/templates.py)."""

    def _compile(self, source: LiveSource):
        from surgesim.templates import source_payload

        route = None
        if source.action == REQUEST:
            route = next(r for r in self.plan.exp.routes(source.service) if r.name == source.route)
        return source_payload(source.source, source.index, self.plan.seed, self.plan.scenario_path.parent, route,
                              project=self.plan.exp.system.project)

    def request_id(self, source: LiveSource) -> str:
        self._seq += 1
        return f"{self.tag}-{source.name}-{self._seq}".replace("_", "-")

    FLEET_STEP_S = 1.0
    """Scenario seconds between fleet moves: a step costs O(vehicles x geofences), so the
    fleet moves at most once per scenario second and pings in between share its positions."""

    def advance_fleets(self, wall_t: float) -> None:
        """Move every fleet to wall time wall_t (scenario time wall_t x time_scale)."""
        for name, fleet in self.fleets.items():
            dt_scenario = (wall_t - self._fleet_wall[name]) * self.plan.time_scale
            if dt_scenario >= self.FLEET_STEP_S or name not in self._fleet_pings:
                if dt_scenario > 0:
                    fleet.step(dt_scenario)
                    self._fleet_wall[name] = wall_t
                # every vehicle's ping at this step (sim/fleet.py's payload), stamped per send
                self._fleet_pings[name] = fleet.pings(np.arange(fleet.n), 0.0)

    def build(self, source: LiveSource, intended: float, wall_t: float | None = None) -> Send | None:
        """The Send for one arrival at epoch `intended` (wall_t: seconds since the start);
        None when a lifecycle step finds no parcel ready (starved)."""
        payload = self.templates.get(source.name)
        if payload is not None:
            return self.rendered(source, intended, payload.render(intended))
        if source.action == PUBLISH:
            return self._publish(source, intended, wall_t)
        if source.action == COMMAND:
            return self._command(source, intended)
        return self._request(source, intended)

    def build_due(self, due: list[tuple[float, LiveSource]], t0: float) -> list[Send | None]:
        """build() for a batch of due arrivals (wall_t, source) of a schedule started at
        epoch t0 (the fleet is moved once per batch, not once per ping)."""
        out: list[Send | None] = []
        fleet_items: dict[str, list[int]] = {}
        for i, (wall_t, source) in enumerate(due):
            if source.action == PUBLISH and source.name in self.fleets and source.name not in self.templates:
                fleet_items.setdefault(source.name, []).append(i)
                out.append(None)
            else:
                out.append(self.build(source, t0 + wall_t, wall_t))
        if fleet_items:
            self.advance_fleets(max(due[i][0] for items in fleet_items.values() for i in items))
        for name, items in fleet_items.items():
            table = self._fleet_pings[name]
            vs = self.rng.integers(0, len(table), size=len(items))
            for i, v in zip(items, vs.tolist()):
                wall_t, source = due[i]
                intended = t0 + wall_t
                ping = dict(table[v])
                ping["ts"] = _iso(intended)  # the device's clock: when it meant to send
                attrs = dict(source.attributes)
                attrs[INTENDED_ATTRIBUTE] = stamp(intended)
                attrs["vehicleId"] = ping["vehicleId"]
                out[i] = Send(source, intended, message=(json.dumps(ping, separators=(",", ":")).encode(), attrs))
        return out

    @staticmethod
    def rendered(source: LiveSource, intended: float, r) -> Send:
        """The Send of a rendered template: X-Intended-Time / intendedTime added."""
        if source.action == PUBLISH:
            attrs = dict(r.attributes)
            attrs[INTENDED_ATTRIBUTE] = stamp(intended)
            return Send(source, intended, message=(r.data, attrs, r.ordering_key))
        headers = dict(r.headers)
        headers[INTENDED_HEADER] = stamp(intended)
        return Send(source, intended, r.method, r.path, headers, r.body)

    def _publish(self, source: LiveSource, intended: float, wall_t: float | None) -> Send:
        attrs = dict(source.attributes)
        attrs[INTENDED_ATTRIBUTE] = stamp(intended)
        fleet = self.fleets.get(source.name)
        if fleet is not None:
            if wall_t is not None or source.name not in self._fleet_pings:
                self.advance_fleets(wall_t or 0.0)
            ping = dict(self._fleet_pings[source.name][int(self.rng.integers(0, fleet.n))])
            ping["ts"] = _iso(intended)
            attrs["vehicleId"] = ping["vehicleId"]
            data = json.dumps(ping, separators=(",", ":")).encode()
        else:
            rid = self.request_id(source)
            v = int(self.rng.integers(0, self.drivers))
            body = {"requestId": rid, "source": source.name, "vehicleId": vehicle_id(v),
                    "requestedAt": _iso(intended)}
            attrs["requestId"] = rid
            data = json.dumps(body, separators=(",", ":")).encode()
        return Send(source, intended, message=(data, attrs))

    def _command(self, source: LiveSource, intended: float) -> Send | None:
        pid = self.book.take(source.route)
        if pid is None:
            return None
        return self.command(source, pid, intended)

    def command(self, source: LiveSource, parcel_id: str, intended: float) -> Send:
        rid = self.request_id(source)
        rng = self.rng
        route = source.route
        if route == "create_shipment":
            lat, lng = 51.5072 + rng.normal(0, 0.08), -0.1276 + rng.normal(0, 0.12)
            body: dict[str, Any] = {
                "requestId": rid, "parcelId": parcel_id, "shipperId": f"S{int(rng.integers(0, 500)):04d}",
                "recipient": {"name": f"Recipient {int(rng.integers(0, 10**6))}",
                              "phone": f"+447700{int(rng.integers(0, 10**6)):06d}"},
                "destination": {"lat": round(float(lat), 6), "lng": round(float(lng), 6),
                                "address": f"{int(rng.integers(1, 300))} High Street"},
                "weightKg": round(float(rng.gamma(2.0, 1.2)) + 0.1, 2),
            }
        elif route == "assign_driver":
            v = int(rng.integers(0, self.drivers))
            body = {"requestId": rid, "driverId": f"D{v:04d}", "vehicleId": vehicle_id(v)}
        elif route == "mark_delivered":
            body = {"requestId": rid, "signedBy": f"Resident {int(rng.integers(0, 1000))}"}
        else:
            body = {"requestId": rid}
        return Send(source, intended, source.method, source.path.replace("{parcel_id}", parcel_id),
                    http_headers(rid, intended), json.dumps(body, separators=(",", ":")).encode(), parcel_id=parcel_id)

    def _request(self, source: LiveSource, intended: float) -> Send:
        rid = self.request_id(source)
        path = source.path
        while "{" in path:
            a, b = path.index("{"), path.index("}")
            path = path[:a] + f"{self.tag}{self._seq}" + path[b + 1:]
        return Send(source, intended, source.method, path, http_headers(rid, intended),
                    json.dumps({"requestId": rid}).encode())

    def finish(self, send: Send, ok: bool) -> None:
        """After the answer: move the parcel along its lifecycle (or offer it again)."""
        if send.parcel_id is not None and not send.stock:
            self.book.finish(send.source.route, send.parcel_id, ok)

    def stocked(self, chain: list[Send], ok: bool) -> None:
        """A stock chain finished: its parcel is ready for the route after the chain's last."""
        if ok and chain:
            route = LIFECYCLE_ROUTES[LIFECYCLE_ROUTES.index(chain[-1].source.route) + 1]
            self.book.ready[route].append(chain[-1].parcel_id)

    def stock_sends(self, counts: dict[str, int], now: float) -> list[list[Send]]:
        """Per stocked parcel, the commands (in order) that bring it to the status its
        route needs: sent before the clock starts, not measured."""
        # the whole scenario's routes: a plan limited to deliveries still stocks via create etc.
        by_route = {s.route: s for s in self.plan.all_sources if s.action == COMMAND}
        chains = []
        for route, n in counts.items():
            k = LIFECYCLE_ROUTES.index(route)
            if any(r not in by_route for r in LIFECYCLE_ROUTES[:k]):
                continue
            for _ in range(n):
                pid = self.book.new_id()
                chain = [self.command(by_route[r], pid, now) for r in LIFECYCLE_ROUTES[:k]]
                for send in chain:
                    send.stock = True
                chains.append(chain)
        return chains


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
