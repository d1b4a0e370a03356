"""What each scheduled send carries on the wire, shared by the Locust users and the fleet
driver so both send byte-for-byte the same kinds of request.

- a templated source (surgesim/templates.py): exactly what its template renders, with its
  `let:` variables and the item it took from a pool (`take:`) in the templates' context;
- an untemplated request: the minimal generic body `{"requestId": ...}` with the header
  `X-Request-Id` the same, path placeholders filled with a unique id;
- an untemplated publish: a fleet's pings (kind fleet, sim/fleet.py's payload), else the
  minimal generic message `{"requestId": ...}`;
- a flow: a FlowRun per arrival, its steps rendered one by one with the variables so far;
- Pub/Sub: the emulator's REST publish, base64 data, attributes.

Pools (`put:` / `take:`) connect sources: an arrival that takes from an empty pool is
`starved` (counted, not sent). Every send carries its intended send time (epoch seconds):
header `X-Intended-Time`, message attribute `intendedTime`.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import io
import json
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surgesim.templates import jsonpath

from surgesim.loadtests.plan import FLOW, PUBLISH, REQUEST, LivePlan, LiveSource
from surgesim.sim.fleet import Fleet

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


# ---- pools ---------------------------------------------------------------------------------


class Pools:
    """Named FIFO pools of items (dicts of variables) that connect sources: a source with
    `put: P` adds its arrival's item on a 2xx, a source with `take: P` sends only with the
    oldest item of P (or is `starved`: counted, not sent), and a failed send gives its
    item back to the front of its pool to be tried again. Per generator process."""

    def __init__(self) -> None:
        self.items: dict[str, collections.deque[dict]] = collections.defaultdict(collections.deque)

    def take(self, pool: str) -> dict | None:
        q = self.items.get(pool)
        return q.popleft() if q else None

    def put(self, pool: str, item: dict) -> None:
        self.items[pool].append(item)

    def give_back(self, pool: str, item: dict) -> None:
        self.items[pool].appendleft(item)  # the oldest again: tried on the next arrival

    def sizes(self) -> dict[str, int]:
        return {name: len(q) for name, q in sorted(self.items.items())}

    def load(self, pools: dict[str, list[dict]], share: tuple[int, int] = (0, 1)) -> None:
        """Items made before the clock (prepare.json's `pools`); share (k, n): this process
        takes every n-th item from the k-th (one of n workers)."""
        k, n = share
        for name, items in pools.items():
            self.items[name].extend(items[k::n])


def load_prepared(pools: Pools, path: str | Path, share: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Put the items of a prepare phase run before the clock (loadtests/prepare.py's
    prepare.json: {"pools": {pool: [items]}, "entries": ...}) into `pools`; the info back."""
    info = json.loads(Path(path).read_text(encoding="utf-8"))
    pools.load(info.get("pools", {}), share)
    return {k: v for k, v in info.items() if k != "pools"}


# ---- captures --------------------------------------------------------------------------------

class CaptureMissing(ValueError):
    """A `capture:` found nothing in the answer."""


def capture(spec: tuple[tuple[str, str], ...], body: bytes | None, headers: Any) -> dict[str, Any]:
    """Values read from an answer: `$.json.path` (the first match in the JSON body) or
    `header:Name` (case-insensitive). Raises CaptureMissing naming what was not there."""
    out: dict[str, Any] = {}
    doc: Any = None
    for name, expr in spec:
        if expr.startswith("header:"):
            value = headers.get(expr[len("header:"):]) if headers is not None else None
        else:
            if doc is None:
                try:
                    doc = json.loads(body or b"null")
                except ValueError:
                    raise CaptureMissing(f"{name}: the answer is not JSON") from None
            found = jsonpath(expr).find(doc)
            value = found[0].value if found else None
        if value is None:
            raise CaptureMissing(f"{name}: nothing at {expr}")
        out[name] = value
    return out


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
    taken: dict | None = None
    """The pool item this send took (source.source.take), given back if it fails."""
    vars: dict = field(default_factory=dict)
    """Taken variables + let: what it puts into its pool on success (with its captures)."""
    write: dict | None = None
    """A Firestore write as the API's Write (prepare's batched commits)."""

    @property
    def label(self) -> str:
        return self.source.label


def _templated(source: LiveSource) -> bool:
    from surgesim.templates import payload_kind

    src = source.source
    kind = payload_kind(src)
    if kind is None or getattr(src, "workflow", None) is not None:
        return False
    return getattr(src, kind).templated or bool(src.let or src.take or src.put)


def http_headers(request_id: str, intended: float, content_type: str = "application/json") -> dict[str, str]:
    return {REQUEST_ID_HEADER: request_id, INTENDED_HEADER: stamp(intended), "Content-Type": content_type}


class FlowRun:
    """One arrival of a flow source going through its steps: next() gives the next Send (or
    a think pause in wall seconds, or None when finished); answer() takes a step's outcome.
    A failed step (not 2xx, transport error, a capture that found nothing) aborts the flow."""

    def __init__(self, payloads: "Payloads", source: LiveSource, intended: float, item: dict | None):
        self.payloads, self.source, self.intended = payloads, source, intended
        self.taken = item
        self.vars = dict(item or {})
        self.vars.update(payloads.flow_lets[source.name].render(intended, self.vars).let)
        self.k = 0
        self.aborted_at: LiveSource | None = None
        self.why = ""

    @property
    def done(self) -> bool:
        return self.k >= len(self.source.steps)

    def next(self, now: float) -> "Send | float | None":
        """now: epoch seconds (a later step's intended time is when the one before ended)."""
        if self.done:
            return None
        step = self.source.steps[self.k]
        if step.action == "think":
            self.k += 1
            return self.payloads.think_s(step)
        return self.payloads.step_send(step, self.intended if self.k == 0 else now, self.vars)

    def answer(self, send: Send, ok: bool, body: bytes | None = None, headers: Any = None) -> bool:
        """The step's outcome; False when it aborted the flow."""
        if ok and send.source.capture:
            try:
                self.vars.update(capture(send.source.capture, body, headers))
            except CaptureMissing as exc:
                ok, self.why = False, str(exc)
        if ok:
            self.k += 1
            return True
        self.aborted_at = send.source
        self.k = len(self.source.steps)
        return False


class Payloads:
    """Builds the Sends of one generator process: seeded, with its own pools and a fleet of
    vehicles x rate_scale moving in scenario time."""

    def __init__(self, plan: LivePlan, tag: str | None = None, seed_offset: int = 0, project: str | None = None,
                 headers: dict[str, str] | None = None):
        """project: where firestore writes go (the generator's endpoints' project, which
        GOOGLE_CLOUD_PROJECT may set); default the system file's. headers: added to every
        HTTP request, over the template's own (a target's auth: target_env.target_headers)."""
        from surgesim.schema.scenario import pool_variables

        self.plan = plan
        self.headers = dict(headers or {})
        self.project = project or plan.exp.system.project
        self.tag = tag or run_tag()
        self.rng = np.random.default_rng([plan.seed, 7919, seed_offset])
        self.pools = Pools()
        self._seq = 0
        self.fleets: dict[str, Fleet] = {}
        for s in plan.sources:
            if s.action == PUBLISH and s.source.kind == "fleet":
                n = max(1, int(round(s.source.vehicles * plan.scale_of(s))))
                self.fleets[s.name] = Fleet(n, seed=plan.seed)
        self._fleet_wall = {name: 0.0 for name in self.fleets}
        self._fleet_pings: dict[str, list[dict]] = {}
        self._pool_vars = pool_variables(list(plan.exp.scenario.traffic.sources) + list(plan.exp.scenario.prepare))
        everything = plan.all_sources + plan.prepare
        self.templates = {s.name: self._compile(s) for s in everything if s.action != FLOW and _templated(s)}
        """Per templated source (and prepare entry), its payload compiled once (surgesim/templates.py)."""
        self.flow_lets = {s.name: self._compile(s, kind="let") for s in everything if s.action == FLOW}
        self.steps = {(s.name, st.step): self._compile(st, kind=st.action, spec=st.spec)
                      for s in everything if s.action == FLOW for st in s.steps if st.action != "think"}
        """Per flow step, its payload (the flow's let and earlier captures are its variables)."""

    def _known(self, source: LiveSource) -> tuple[str, ...]:
        src = source.source
        names = set(self._pool_vars.get(src.take, ())) if src.take else set()
        names |= set(src.let)
        if src.flow is not None:
            for step in src.flow.steps:
                names |= set(step.capture)
        return tuple(sorted(names))

    def _compile(self, source: LiveSource, kind: str | None = None, spec: Any = None):
        from surgesim.templates import source_payload

        route = None
        if source.action == REQUEST:
            route = next(r for r in self.plan.exp.routes(source.service) if r.name == source.route)
        step = source.step
        return source_payload(source.source, source.index if step is None else source.index * 1000 + step + 1,
                              self.plan.seed, self.plan.scenario_path.parent, route,
                              captures=self._known(source), project=self.project, run=self.tag,
                              spec=spec, kind=kind, with_let=step is None)

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

    def build(self, source: LiveSource, intended: float, wall_t: float | None = None) -> "Send | FlowRun | None":
        """The Send (a FlowRun for a flow) for one arrival at epoch `intended` (wall_t: seconds
        since the start); None when it takes from an empty pool (starved)."""
        item = None
        take = source.source.take
        if take is not None:
            item = self.pools.take(take)
            if item is None:
                return None
        if source.action == FLOW:
            return FlowRun(self, source, intended, item)
        payload = self.templates.get(source.name)
        if payload is not None:
            r = payload.render(intended, item)
            send = self.rendered(source, intended, r)
            send.taken, send.vars = item, {**(item or {}), **r.let}
            return send
        if source.action == PUBLISH:
            return self._publish(source, intended, wall_t)
        return self._request(source, intended)

    def step_send(self, step: LiveSource, intended: float, variables: dict) -> Send:
        """A flow step's Send, rendered with the flow's variables so far."""
        r = self.steps[(step.name, step.step)].render(intended, variables)
        return self.rendered(step, intended, r)

    def think_s(self, step: LiveSource) -> float:
        """A think step's pause in wall seconds: a draw of its distribution (scenario time) / time_scale."""
        from surgesim.sim.core import sample

        return float(sample(step.think, 1, self.rng)[0]) / self.plan.time_scale

    def build_due(self, due: list[tuple[float, LiveSource]], t0: float) -> list["Send | FlowRun | None"]:
        """build() for a batch of due arrivals (wall_t, source) of a schedule started at
        epoch t0 (the fleet is moved once per batch, not once per ping)."""
        out: list[Send | FlowRun | None] = []
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

    def rendered(self, source: LiveSource, intended: float, r) -> Send:
        """The Send of a rendered template: X-Intended-Time / intendedTime added."""
        if source.action == PUBLISH:
            attrs = dict(r.attributes)
            attrs[INTENDED_ATTRIBUTE] = stamp(intended)
            return Send(source, intended, message=(r.data, attrs, r.ordering_key))
        headers = {**r.headers, **self.headers}
        headers[INTENDED_HEADER] = stamp(intended)
        return Send(source, intended, r.method, r.path, headers, r.body, write=r.write)

    def _publish(self, source: LiveSource, intended: float, wall_t: float | None) -> Send:
        """An untemplated publish: a fleet's ping, else the minimal generic message
        {"requestId": ...} (attribute requestId too)."""
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
            attrs["requestId"] = rid
            data = json.dumps({"requestId": rid}, separators=(",", ":")).encode()
        return Send(source, intended, message=(data, attrs))

    def _request(self, source: LiveSource, intended: float) -> Send:
        """An untemplated request: the minimal generic body {"requestId": ...} (header
        X-Request-Id the same), path placeholders filled with a unique id."""
        rid = self.request_id(source)
        path = source.path
        while "{" in path:
            a, b = path.index("{"), path.index("}")
            path = path[:a] + f"{self.tag}{self._seq}" + path[b + 1:]
        return Send(source, intended, source.method, path, {**http_headers(rid, intended), **self.headers},
                    json.dumps({"requestId": rid}).encode())

    def finish(self, send: Send, ok: bool, body: bytes | None = None, headers: Any = None) -> bool:
        """After the answer of a plain source's send: its item into `put:` (with its
        captures) on success, the taken item back to its pool on failure. False when a
        capture found nothing (the item is given back, as for a failure)."""
        src = send.source.source
        if ok and src.put is not None:
            try:
                item = {**send.vars, **capture(send.source.capture, body, headers)} if send.source.capture else send.vars
            except CaptureMissing:
                ok = False
            else:
                self.pools.put(src.put, item)
        if not ok and send.taken is not None:
            self.pools.give_back(src.take, send.taken)
        return ok

    def flow_done(self, run: FlowRun) -> None:
        """A flow finished or aborted: its variables into `put:`, or the taken item back."""
        src = run.source.source
        if run.aborted_at is None:
            if src.put is not None:
                self.pools.put(src.put, run.vars)
        elif run.taken is not None:
            self.pools.give_back(src.take, run.taken)


def count_flow(recorder, run: FlowRun) -> None:
    """A finished flow's counts under its source: flows_completed or flows_aborted and
    aborted_at_<step label> (surgesim/live/totals.py makes them the flow's row)."""
    if run.aborted_at is None:
        recorder.count(run.source.name, "flows_completed")
    else:
        recorder.count(run.source.name, "flows_aborted")
        recorder.count(run.source.name, f"aborted_at_{run.aborted_at.step_label}")


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
