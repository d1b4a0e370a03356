"""Fidelity probe: which Pub/Sub features does the running emulator really apply?

Measured, never assumed, in about a second, over the emulator's REST adapter (same
port as gRPC). Every probe uses fresh random topic/subscription names (recreating a name
degrades the emulator, see DESIGN.md) and deletes what it created. Each feature is
``True``/``False`` when measured and ``None`` when the probe could not tell (the reason
is in ``errors``).

* ``filter_applied``: a filtered subscription gets one matching and one non-matching
  message; does the non-matching one arrive? (Pub/Sub acks it unseen.)
* ``dead_letter_applied`` / ``delivery_attempt_counted``: nack a message (ack deadline 0)
  until it lands on the dead-letter topic; maxDeliveryAttempts=5 (the minimum Pub/Sub
  allows) and no retry policy, i.e. immediate redelivery.
* ``ordering_preserved``: 10 messages with one ordering key, published one request each,
  on an ordered subscription: delivered in order, key echoed?
* ``exactly_once_accepted`` / ``exactly_once_rejects_reack``: subscription accepts
  ``enableExactlyOnceDelivery``; a second ack of the same ack id is refused.
* ``push_delivery``: a push subscription to a local HTTP endpoint receives the envelope.
* ``bigquery_subscription_accepted``: creating a subscription with ``bigqueryConfig`` is
  accepted (the emulator has no BigQuery to write to, so accepted means ignored).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from .gcloud_sdk import find_sdk
from .state import FIDELITY_FILE, resolve_state_dir, write_json_atomic


@dataclass
class FidelityReport:
    emulator: str
    endpoint: str
    project: str
    emulator_version: str | None
    gcloud_version: str | None
    measured_at: str
    duration_s: float
    filter_accepted: bool | None = None
    filter_applied: bool | None = None
    dead_letter_applied: bool | None = None
    delivery_attempt_counted: bool | None = None
    dead_letter_after_attempts: int | None = None
    ordering_preserved: bool | None = None
    exactly_once_accepted: bool | None = None
    exactly_once_rejects_reack: bool | None = None
    push_delivery: bool | None = None
    bigquery_subscription_accepted: bool | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FidelityReport":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary(self) -> str:
        def f(v: bool | None, yes: str, no: str) -> str:
            return yes if v else (no if v is False else "unknown")

        return (
            f"Pub/Sub emulator {self.emulator_version or '?'} (gcloud {self.gcloud_version or '?'}) fidelity: "
            f"filters {f(self.filter_applied, 'applied', 'NOT applied')}, "
            f"dead-letter {f(self.dead_letter_applied, 'applied', 'NOT applied')}"
            + (f" (after {self.dead_letter_after_attempts} attempts)" if self.dead_letter_after_attempts else "")
            + f", ordering {f(self.ordering_preserved, 'kept', 'NOT kept')}, "
            f"exactly-once {f(self.exactly_once_accepted, 'accepted', 'rejected')}, "
            f"push {f(self.push_delivery, 'works', 'does not work')}, "
            f"BigQuery subscriptions {f(self.bigquery_subscription_accepted, 'accepted but not written', 'rejected')} "
            f"[{self.duration_s:.1f} s]"
        )


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class _Api:
    """Tiny REST client for the emulator; remembers what it created for cleanup."""

    def __init__(self, endpoint: str, project: str) -> None:
        self.base = f"http://{endpoint}/v1/projects/{project}"
        self.project = project
        self.http = httpx.Client(timeout=5.0, trust_env=False)
        self.created: list[str] = []
        self.tag = uuid.uuid4().hex[:10]

    def name(self, kind: str) -> str:
        return f"surgesim-probe-{kind}-{self.tag}"

    def topic(self, kind: str) -> str:
        n = self.name(kind)
        r = self.http.put(f"{self.base}/topics/{n}", json={})
        r.raise_for_status()
        self.created.append(f"topics/{n}")
        return n

    def subscription(self, kind: str, topic: str, **body) -> httpx.Response:
        n = self.name(kind)
        r = self.http.put(
            f"{self.base}/subscriptions/{n}", json={"topic": f"projects/{self.project}/topics/{topic}", **body}
        )
        if r.status_code == 200:
            self.created.append(f"subscriptions/{n}")
        return r

    def publish(self, topic: str, *messages: dict) -> None:
        r = self.http.post(f"{self.base}/topics/{topic}:publish", json={"messages": list(messages)})
        r.raise_for_status()

    def pull(self, sub: str, n: int = 100) -> list[dict]:
        r = self.http.post(f"{self.base}/subscriptions/{sub}:pull", json={"maxMessages": n, "returnImmediately": True})
        r.raise_for_status()
        return r.json().get("receivedMessages", [])

    def ack(self, sub: str, ack_ids: list[str]) -> httpx.Response:
        return self.http.post(f"{self.base}/subscriptions/{sub}:acknowledge", json={"ackIds": ack_ids})

    def nack(self, sub: str, ack_ids: list[str]) -> None:
        self.http.post(f"{self.base}/subscriptions/{sub}:modifyAckDeadline", json={"ackIds": ack_ids, "ackDeadlineSeconds": 0})

    def delete_created(self) -> None:
        subs_first = sorted(self.created, key=lambda p: not p.startswith("subscriptions/"))
        self.created = []
        for path in subs_first:
            try:
                self.http.delete(f"{self.base}/{path}")
            except httpx.HTTPError:
                pass

    def cleanup(self) -> None:
        self.delete_created()
        self.http.close()


def _probe_filter(api: _Api, wait: float) -> dict:
    topic = api.topic("filter")
    r = api.subscription("filter", topic, filter='attributes.kind = "match"')
    if r.status_code != 200:
        return {"filter_accepted": False, "error": f"filtered subscription refused: {r.status_code} {r.text[:200]}"}
    sub = api.name("filter")
    api.publish(topic, {"data": _b64("m"), "attributes": {"kind": "match"}},
                {"data": _b64("n"), "attributes": {"kind": "other"}})
    seen: set[str] = set()
    deadline = time.monotonic() + wait
    match_at = None
    while time.monotonic() < deadline:
        got = api.pull(sub)
        for m in got:
            seen.add(m["message"].get("attributes", {}).get("kind", ""))
        if got:
            api.ack(sub, [m["ackId"] for m in got])
        if "other" in seen:
            break
        if "match" in seen and match_at is None:
            match_at = time.monotonic()
            deadline = min(deadline, match_at + 0.75)  # give a non-matching one time to show up
        time.sleep(0.02)
    if "match" not in seen:
        return {"filter_accepted": True, "error": "the matching message never arrived"}
    return {"filter_accepted": True, "filter_applied": "other" not in seen}


def _probe_dead_letter(api: _Api, wait: float) -> dict:
    topic, dlq = api.topic("dl"), api.topic("dlq")
    api.subscription("dlqsub", dlq)
    r = api.subscription(
        "dl", topic,
        deadLetterPolicy={"deadLetterTopic": f"projects/{api.project}/topics/{dlq}", "maxDeliveryAttempts": 5},
    )
    if r.status_code != 200:
        return {"dead_letter_applied": False, "error": f"dead-letter policy refused: {r.status_code} {r.text[:200]}"}
    sub, dsub = api.name("dl"), api.name("dlqsub")
    api.publish(topic, {"data": _b64("poison")})
    attempts: list[int | None] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        got = api.pull(sub)
        for m in got:
            attempts.append(m.get("deliveryAttempt"))
        if got:
            api.nack(sub, [m["ackId"] for m in got])
        dead = api.pull(dsub)
        if dead:
            api.ack(dsub, [m["ackId"] for m in dead])
            count = dead[0]["message"].get("attributes", {}).get("CloudPubSubDeadLetterSourceDeliveryCount")
            counted = [a for a in attempts if a is not None]
            return {
                "dead_letter_applied": True,
                "delivery_attempt_counted": bool(counted) and counted == list(range(1, len(counted) + 1)),
                "dead_letter_after_attempts": int(count) if count else len(attempts),
            }
        time.sleep(0.02)
    counted = [a for a in attempts if a is not None]
    return {
        "dead_letter_applied": False,
        "delivery_attempt_counted": bool(counted),
        "error": f"not dead-lettered within {wait:.0f} s after {len(attempts)} deliveries",
    }


def _probe_ordering(api: _Api, wait: float) -> dict:
    topic = api.topic("order")
    r = api.subscription("order", topic, enableMessageOrdering=True)
    if r.status_code != 200:
        return {"ordering_preserved": False, "error": f"ordered subscription refused: {r.status_code}"}
    sub = api.name("order")
    n = 10
    for i in range(n):
        api.publish(topic, {"data": _b64(str(i)), "orderingKey": "k"})
    order: list[int] = []
    keys: set[str] = set()
    deadline = time.monotonic() + wait
    while len(order) < n and time.monotonic() < deadline:
        got = api.pull(sub)
        for m in got:
            order.append(int(base64.b64decode(m["message"]["data"])))
            keys.add(m["message"].get("orderingKey", ""))
        if got:
            api.ack(sub, [m["ackId"] for m in got])
        else:
            time.sleep(0.02)
    if len(order) < n:
        return {"error": f"only {len(order)} of {n} ordered messages arrived"}
    return {"ordering_preserved": order == list(range(n)) and keys == {"k"}}


def _probe_exactly_once(api: _Api, wait: float) -> dict:
    topic = api.topic("eod")
    r = api.subscription("eod", topic, enableExactlyOnceDelivery=True)
    if r.status_code != 200:
        return {"exactly_once_accepted": False}
    accepted = bool(r.json().get("enableExactlyOnceDelivery"))
    sub = api.name("eod")
    api.publish(topic, {"data": _b64("once")})
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        got = api.pull(sub)
        if got:
            ack_id = got[0]["ackId"]
            first = api.ack(sub, [ack_id])
            second = api.ack(sub, [ack_id])
            return {"exactly_once_accepted": accepted,
                    "exactly_once_rejects_reack": first.status_code == 200 and second.status_code != 200}
        time.sleep(0.02)
    return {"exactly_once_accepted": accepted, "error": "exactly-once message never arrived"}


def _probe_push(api: _Api, wait: float) -> dict:
    received: list[dict] = []
    event = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                received.append(json.loads(body))
            except ValueError:
                received.append({})
            self.send_response(204)
            self.end_headers()
            event.set()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        topic = api.topic("push")
        url = f"http://127.0.0.1:{server.server_address[1]}/push"
        r = api.subscription("push", topic, pushConfig={"pushEndpoint": url})
        if r.status_code != 200:
            return {"push_delivery": False, "error": f"push subscription refused: {r.status_code}"}
        api.publish(topic, {"data": _b64("pushed"), "attributes": {"a": "1"}})
        if not event.wait(wait):
            return {"push_delivery": False, "error": f"nothing pushed within {wait:.0f} s"}
        env = received[0]
        ok = base64.b64decode(env.get("message", {}).get("data", "")) == b"pushed" and "subscription" in env
        return {"push_delivery": ok}
    finally:
        api.delete_created()  # delete the push subscription before its endpoint goes away
        server.shutdown()
        server.server_close()


def _probe_bigquery_subscription(api: _Api, wait: float) -> dict:
    topic = api.topic("bqsub")
    r = api.subscription("bqsub", topic, bigqueryConfig={"table": f"{api.project}.surgesim_probe.t", "writeMetadata": True})
    return {"bigquery_subscription_accepted": r.status_code == 200}


PROBES = {
    "filter": _probe_filter,
    "dead_letter": _probe_dead_letter,
    "ordering": _probe_ordering,
    "exactly_once": _probe_exactly_once,
    "push": _probe_push,
    "bigquery_subscription": _probe_bigquery_subscription,
}


def probe_pubsub(
    endpoint: str,
    project: str,
    *,
    state_dir=None,
    wait: float = 3.0,
    save: bool = True,
) -> FidelityReport:
    """Probe the Pub/Sub emulator at ``endpoint`` (``host:port``); write ``fidelity.json``.

    ``wait`` bounds each feature's wait for messages (features run concurrently).
    """
    t0 = time.monotonic()
    sdk = find_sdk()
    report = FidelityReport(
        emulator="pubsub",
        endpoint=endpoint,
        project=project,
        emulator_version=sdk.component_version("pubsub") if sdk else None,
        gcloud_version=sdk.version if sdk else None,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_s=0.0,
    )

    def run(name: str) -> tuple[str, dict]:
        api = _Api(endpoint, project)
        try:
            return name, PROBES[name](api, wait)
        except Exception as exc:  # noqa: BLE001 -- one broken probe must not hide the others
            return name, {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            api.cleanup()

    with ThreadPoolExecutor(max_workers=len(PROBES)) as pool:
        for name, result in pool.map(run, PROBES):
            error = result.pop("error", None)
            if error:
                report.errors[name] = error
            for k, v in result.items():
                setattr(report, k, v)
    report.duration_s = round(time.monotonic() - t0, 2)
    if save:
        write_json_atomic(resolve_state_dir(state_dir) / FIDELITY_FILE, report.to_dict())
    return report


def load_fidelity(state_dir=None) -> FidelityReport | None:
    """The last saved probe result, or None."""
    path = Path(resolve_state_dir(state_dir)) / FIDELITY_FILE
    try:
        return FidelityReport.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
