"""Unary gRPC pull / ack / modifyAckDeadline on the Pub/Sub emulator, in an asyncio loop.

For a bridge that only drains a subscription in batches, gRPC is the emulator's cheap
path: ``pull(1000)`` + ack measured ~21-30k msg/s over gRPC against ~3-6k over REST on the
same emulator (docs/benchmarks/bridges.md), because the REST adapter spends its time in
JSON on both sides. Messages are parsed with the raw ``google.pubsub_v1`` protobuf
classes (upb, C speed), not the proto-plus wrappers or the official client's threads.

Errors surface as :class:`PubSubGrpcError` (a ``PubSubRestError``).

:class:`Poller` is how every bridge drains a subscription.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time

import grpc
from google.pubsub_v1 import types as _t

from .pubsub_rest import PubSubRestError, stoppable_sleep

log = logging.getLogger(__name__)

_PullRequest = _t.PullRequest.pb()
_PullResponse = _t.PullResponse.pb()
_AckRequest = _t.AcknowledgeRequest.pb()
_ModAckRequest = _t.ModifyAckDeadlineRequest.pb()
_Empty = b""

PULL = "/google.pubsub.v1.Subscriber/Pull"
ACKNOWLEDGE = "/google.pubsub.v1.Subscriber/Acknowledge"
MODIFY_ACK_DEADLINE = "/google.pubsub.v1.Subscriber/ModifyAckDeadline"
_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class PubSubGrpcError(PubSubRestError):
    pass


class PubSubGrpc:
    """Create it inside the event loop that uses it (a ``grpc.aio`` channel is bound to one)."""

    def __init__(self, endpoint: str, project: str, *, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.project = project
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(endpoint, options=_OPTIONS)
        self._pull = self._channel.unary_unary(PULL, request_serializer=_PullRequest.SerializeToString,
                                               response_deserializer=_PullResponse.FromString)
        self._ack = self._channel.unary_unary(ACKNOWLEDGE, request_serializer=_AckRequest.SerializeToString)
        self._modack = self._channel.unary_unary(MODIFY_ACK_DEADLINE,
                                                 request_serializer=_ModAckRequest.SerializeToString)

    def subscription_path(self, sub: str) -> str:
        return sub if sub.startswith("projects/") else f"projects/{self.project}/subscriptions/{sub}"

    async def pull(self, sub: str, max_messages: int) -> list:
        """Received messages (raw protobuf ``ReceivedMessage``), at once, possibly none."""
        req = _PullRequest(subscription=self.subscription_path(sub), max_messages=max_messages,
                           return_immediately=True)
        try:
            resp = await self._pull(req, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise PubSubGrpcError(f"pull {sub}: {exc.code().name} {exc.details()}") from None
        return list(resp.received_messages)

    async def ack(self, sub: str, ack_ids: list[str]) -> None:
        if ack_ids:
            try:
                await self._ack(_AckRequest(subscription=self.subscription_path(sub), ack_ids=ack_ids),
                                timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                raise PubSubGrpcError(f"ack {sub}: {exc.code().name} {exc.details()}") from None

    async def modify_ack_deadline(self, sub: str, ack_ids: list[str], seconds: int) -> None:
        if ack_ids:
            try:
                await self._modack(_ModAckRequest(subscription=self.subscription_path(sub), ack_ids=ack_ids,
                                                  ack_deadline_seconds=int(seconds)), timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                raise PubSubGrpcError(f"modifyAckDeadline {sub}: {exc.code().name} {exc.details()}") from None

    async def aclose(self) -> None:
        await self._channel.close()


def as_rest(r) -> dict:
    """A raw protobuf ``ReceivedMessage`` in the REST adapter's JSON shape (base64 data,
    RFC 3339 publish time; deliveryAttempt and orderingKey only when set, as REST prints)."""
    m = r.message
    msg = {"data": base64.b64encode(m.data).decode(), "attributes": dict(m.attributes),
           "messageId": m.message_id, "publishTime": m.publish_time.ToJsonString()}
    if m.ordering_key:
        msg["orderingKey"] = m.ordering_key
    out = {"ackId": r.ack_id, "message": msg}
    if r.delivery_attempt:
        out["deliveryAttempt"] = r.delivery_attempt
    return out


#: A pull that returns fewer messages than this is a trickle (``Poller.pace``); the
#: emulator answers a backlog in parts of a few hundred.
PACED_BELOW = 100


class Poller:
    """Pulls one subscription for a bridge that drains it: immediate gRPC pulls, and while
    the subscription is empty a backoff from ``idle_min`` to ``idle_max``. A failed pull
    waits 0.5 s. ``pull`` returns [] then, on an empty pull, and once ``stop`` is set, so a
    loop simply tries again or ends.

    Not the emulator's long poll, although it answers 20-35 ms after a publish and would
    cost nothing while idle: a long poll the client abandons (cancelled at a bridge's stop,
    or past its deadline while the emulator is frozen by an emulator_restart fault) stays
    registered in the emulator, which leases the next message to it and so hides that
    message for a whole ack deadline (measured; docs/benchmarks/bridges.md). Immediate
    pulls over gRPC cost a fraction of the REST ones they replace (no JSON on either side).

    ``pace``: for a consumer that does not need each message at once (the BigQuery
    subscription), the least time between pulls while they return only a trickle: a
    steady stream then costs at most one pull per ``pace`` instead of several pulls per
    message (after each hit the backoff restarts at ``idle_min``)."""

    def __init__(self, grpc_client: PubSubGrpc, subscription: str, stop: asyncio.Event, *, idle_min: float = 0.005,
                 idle_max: float = 0.1, pace: float = 0.0, on_error=None) -> None:
        self.grpc = grpc_client
        self.subscription = subscription
        self.stop = stop
        self.idle_min = self.idle = idle_min
        self.idle_max = idle_max
        self.pace = pace
        self.on_error = on_error
        self._not_before = 0.0

    async def pull(self, max_messages: int) -> list:
        if self.stop.is_set():
            return []
        if self.pace:
            wait = self._not_before - time.monotonic()
            if wait > 0:
                await stoppable_sleep(self.stop, wait)
        try:
            got = await self.grpc.pull(self.subscription, max_messages)
        except PubSubRestError as exc:
            if self.on_error is not None:
                self.on_error()
            log.warning("pull %s failed: %s", self.subscription, exc)
            await stoppable_sleep(self.stop, 0.5)
            return []
        if not got:
            await stoppable_sleep(self.stop, self.idle)
            self.idle = min(self.idle_max, self.idle * 2)
            return []
        self.idle = self.idle_min
        if self.pace and len(got) < PACED_BELOW:
            # A trickle, not a backlog: let the next pull wait so that it takes a batch.
            # Each pull costs the emulator 1–4 ms of CPU, empty or not (docs/emulators.md).
            self._not_before = time.monotonic() + self.pace
        return got
