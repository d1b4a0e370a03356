"""Push delivery with Pub/Sub's own concurrency, retry and dead-letter behaviour.

The emulator pushes with at most 2 requests in flight per subscription (DESIGN.md), which
turns any push consumer into a bottleneck that production never has. So each push
subscription is provisioned on the emulator as a *pull* subscription (same ack deadline
and dead-letter policy) and this bridge delivers it:

* the wrapped push envelope (``message.data`` base64, ``attributes``, ``messageId`` and
  ``message_id``, ``publishTime`` and ``publish_time``, ``subscription``,
  ``deliveryAttempt``), POSTed with ``Authorization: Bearer <ID token>`` when the
  subscription has a push service account: an OIDC token for that account with ``aud``
  the push endpoint, signed by the run's key (emulators/identity.py);
* Pub/Sub's push flow control: a *push window* of concurrent requests that starts small
  (single digit), grows by one per fast success (so it doubles every round trip:
  slow-start), halves on a failure and stops growing while requests are slow (> 1 s);
  after failures delivery pauses (push backoff, 100 ms doubling to 60 s) -- the model
  the simulator uses too (surgesim.pubsub_push);
* ack on 102/200/201/202/204, anything else (or no answer within the ack deadline) is
  a nack; with a retry policy the message comes back after
  ``min(max_backoff, min_backoff * 2**(attempt-1))`` -- done by setting its ack deadline
  to that backoff instead of nacking at once;
* dead-lettering is left to the emulator, which counts delivery attempts on pull and
  moves the message to the dead-letter topic after ``max_attempts`` (verified by
  tests/integration/test_bridges_push.py);
* where the emulator does not apply subscription filters, non-matching messages are acked
  unseen and counted as filtered (surgesim.pubsub_filter: the real syntax).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Callable

from surgesim.histogram import Histogram
from surgesim.pubsub_filter import parse_filter
from surgesim.pubsub_push import PushWindow

from . import service_http
from .identity import Issuer, identity_headers
from .pubsub_grpc import Poller, PubSubGrpc, as_rest
from .pubsub_rest import PubSubRest, PubSubRestError, stoppable_sleep

log = logging.getLogger(__name__)

#: Status codes Pub/Sub takes as an acknowledgement of a push request.
ACK_STATUS = frozenset({102, 200, 201, 202, 204})
PULL_BATCH = 1000


def retry_backoff(attempt: int, min_backoff: float | None, max_backoff: float | None) -> float:
    """Seconds before redelivery after the ``attempt``-th delivery failed.

    No retry policy (None) is Pub/Sub's default: redeliver at once. With one, the delay
    grows exponentially from min_backoff and is capped at max_backoff.
    """
    if min_backoff is None:
        return 0.0
    hi = max_backoff if max_backoff is not None else 600.0
    return float(min(hi, min_backoff * 2 ** max(0, attempt - 1)))


def build_envelope(received: dict, subscription_path: str) -> dict:
    """The wrapped push body Pub/Sub sends, from a REST ``receivedMessages`` entry."""
    msg = received["message"]
    inner: dict = {
        "data": msg.get("data", ""),
        "messageId": msg["messageId"],
        "message_id": msg["messageId"],
        "publishTime": msg["publishTime"],
        "publish_time": msg["publishTime"],
    }
    if msg.get("attributes"):
        inner["attributes"] = dict(msg["attributes"])
    if msg.get("orderingKey"):
        inner["orderingKey"] = msg["orderingKey"]
    env = {"message": inner, "subscription": subscription_path}
    if received.get("deliveryAttempt") is not None:
        env["deliveryAttempt"] = int(received["deliveryAttempt"])
    return env


def build_message_published(received: dict, subscription_path: str, topic_path: str) -> tuple[dict, bytes]:
    """(headers, body) of the CloudEvent an Eventarc Pub/Sub trigger sends for one message:
    ``google.cloud.pubsub.topic.v1.messagePublished`` in binary mode, ``ce-id`` the message
    id, ``ce-time`` its publish time, data ``{message, subscription}`` as JSON (the push
    envelope without ``deliveryAttempt``: google-events' MessagePublishedData)."""
    env = build_envelope(received, subscription_path)
    env.pop("deliveryAttempt", None)
    msg = received["message"]
    project, topic = topic_path.split("/")[1], topic_path.rsplit("/", 1)[-1]
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": msg["messageId"],
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "ce-time": msg["publishTime"],
    }
    return headers, json.dumps(env).encode()


@dataclass(frozen=True)
class PushTarget:
    """One push subscription as the bridge delivers it."""

    subscription: str
    topic: str
    url: str
    ack_deadline: float = 10.0
    min_backoff: float | None = None
    max_backoff: float | None = None
    dead_letter_topic: str | None = None
    max_attempts: int = 5
    filter: str | None = None
    enforce_filter: bool = True
    """Apply ``filter`` here (the emulator accepts filters but does not apply them)."""
    service_account: str | None = None
    """The push identity: each request carries an ID token for it (None: unauthenticated)."""
    audience: str | None = None
    """The token's ``aud``; None is Pub/Sub's default, the push endpoint URL."""
    max_window: int = 1000
    cloudevent: bool = False
    """Deliver as an Eventarc Pub/Sub trigger does (a messagePublished CloudEvent), not as a push envelope."""


@dataclass
class PushCounters:
    delivered: int = 0
    acked: int = 0
    nacked: int = 0
    filtered: int = 0
    errors: int = 0
    inflight: int = 0
    window: int = 0
    latency: Histogram = field(default_factory=Histogram)
    """Push request latency (POST to answer), every sample."""


Settled = Callable[[str, str, str], None]
"""on_settled(subscription, message_id, outcome) with outcome 'acked' | 'filtered'."""


class PushBridge:
    def __init__(self, rest: PubSubRest, target: PushTarget, http, on_settled: Settled | None = None,
                 issuer: Issuer | None = None) -> None:
        """``http``: a ``service_http.session`` of the loop that runs the bridge; ``issuer``
        signs the push identity's tokens."""
        self.rest = rest
        self.issuer = issuer
        self.t = target
        self.http = http
        self.on_settled = on_settled
        self.window = PushWindow(maximum=target.max_window)
        self.counters = PushCounters(window=self.window.limit)
        self.path = rest.subscription_path(target.subscription)
        self._predicate = parse_filter(target.filter or "") if (target.filter and target.enforce_filter) else None
        self._slot = asyncio.Event()
        self._stop = asyncio.Event()
        self._paused_until = 0.0
        self._grpc: PubSubGrpc | None = None
        self._acks: list[str] = []
        self._ack_ready = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        # The emulator (like Pub/Sub) reports deliveryAttempt only with a dead-letter
        # policy; the retry backoff still needs the attempt number, so count it here too.
        self._attempts: dict[str, int] = {}
        self._timeout = max(0.5, target.ack_deadline - 0.25)  # answer before the lease expires

    async def provision(self) -> None:
        """Create the pull subscription that stands in for the push one."""
        dl = (self.t.dead_letter_topic, self.t.max_attempts) if self.t.dead_letter_topic else None
        await self.rest.create_subscription(self.t.subscription, self.t.topic, ack_deadline=self.t.ack_deadline,
                                            dead_letter=dl, filter=self.t.filter)

    def stop(self) -> None:
        self._stop.set()
        self._slot.set()

    async def run(self) -> None:
        # Pulls, acks and nacks over gRPC (the emulator's cheap path); the channel belongs
        # to the loop that runs the bridge.
        self._grpc = PubSubGrpc(self.rest.endpoint, self.rest.project)
        acker = asyncio.create_task(self._ack_loop())
        poller = Poller(self._grpc, self.t.subscription, self._stop)
        loop = asyncio.get_running_loop()
        try:
            while not self._stop.is_set():
                pause = self._paused_until - loop.time()
                if pause > 0:
                    await stoppable_sleep(self._stop, min(pause, 0.5))
                    continue
                free = self.window.limit - self.counters.inflight
                if free <= 0:
                    self._slot.clear()
                    await self._slot.wait()
                    continue
                got = await poller.pull(min(free, PULL_BATCH))
                for received in got:
                    self._dispatch(as_rest(received))
        finally:
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            acker.cancel()
            await asyncio.gather(acker, return_exceptions=True)
            await self._flush_acks()
            await self._grpc.aclose()

    def _dispatch(self, received: dict) -> None:
        msg = received["message"]
        if self._predicate is not None and not self._predicate(msg.get("attributes") or {}):
            # As in Pub/Sub: a message the filter rejects is acknowledged, never delivered.
            self.counters.filtered += 1
            self._queue_ack(received["ackId"])
            if self.on_settled:
                self.on_settled(self.t.subscription, msg["messageId"], "filtered")
            return
        self.counters.inflight += 1
        task = asyncio.create_task(self._deliver(received))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, received: dict) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ok = False
        try:
            headers, body = self._request(received)
            headers.update(identity_headers(self.issuer, self.t.audience or self.t.url, self.t.service_account))
            self.counters.delivered += 1
            ok = await service_http.post_status(self.http, self.t.url, body, headers, self._timeout) in ACK_STATUS
        except service_http.FAILURES:
            ok = False
        except asyncio.CancelledError:
            raise
        finally:
            self.counters.inflight -= 1
        latency = loop.time() - t0
        self.counters.latency.record(latency)
        mid = received["message"]["messageId"]
        if ok:
            self._attempts.pop(mid, None)
            self.window.on_success(latency)
            self.counters.acked += 1
            self._queue_ack(received["ackId"])
            if self.on_settled:
                self.on_settled(self.t.subscription, received["message"]["messageId"], "acked")
        else:
            self.counters.nacked += 1
            pause = self.window.on_failure()
            self._paused_until = max(self._paused_until, loop.time() + pause)
            await self._nack(received)
        self.counters.window = self.window.limit
        self._slot.set()

    def _request(self, received: dict) -> tuple[dict, bytes]:
        """(headers, body) of one delivery, without the authorization header."""
        if self.t.cloudevent:
            return build_message_published(received, self.path, self.rest.topic_path(self.t.topic))
        return {"content-type": "application/json"}, json.dumps(build_envelope(received, self.path)).encode()

    async def _nack(self, received: dict) -> None:
        mid = received["message"]["messageId"]
        attempt = int(received.get("deliveryAttempt") or self._attempts.get(mid, 0) + 1)
        self._attempts[mid] = attempt
        delay = retry_backoff(attempt, self.t.min_backoff, self.t.max_backoff)
        ack_id = received["ackId"]
        try:
            if delay >= 1.0:
                # The emulator redelivers when this new deadline expires: the retry backoff.
                await self._grpc.modify_ack_deadline(self.t.subscription, [ack_id], math.ceil(delay))
            else:
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._grpc.modify_ack_deadline(self.t.subscription, [ack_id], 0)
        except PubSubRestError as exc:
            # The lease then simply expires and the emulator redelivers: still a nack.
            self.counters.errors += 1
            log.debug("nack %s failed: %s", self.t.subscription, exc)

    def _queue_ack(self, ack_id: str) -> None:
        self._acks.append(ack_id)
        self._ack_ready.set()

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_ready.wait()
            await asyncio.sleep(0.01)  # acks in batches, as the client libraries send them
            self._ack_ready.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        while self._acks:
            batch, self._acks = self._acks[:2500], self._acks[2500:]
            try:
                await self._grpc.ack(self.t.subscription, batch)
            except PubSubRestError as exc:
                self.counters.errors += 1
                log.warning("ack %s failed (%d ids): %s", self.t.subscription, len(batch), exc)

