"""Unary gRPC pull / ack / modifyAckDeadline on the Pub/Sub emulator, in an asyncio loop.

For a bridge that only drains a subscription in batches, gRPC is the emulator's cheap
path: ``pull(1000)`` + ack measured ~21-30k msg/s over gRPC against ~3-6k over REST on the
same emulator (docs/benchmarks/bridges.md), because the REST adapter spends its time in
JSON on both sides. Messages are parsed with the raw ``google.pubsub_v1`` protobuf
classes (upb, C speed), not the proto-plus wrappers or the official client's threads.

Errors surface as :class:`PubSubGrpcError` (a ``PubSubRestError``).

:class:`Poller` is how every bridge drains a subscription: at once while messages are
there, then in the emulator's long poll once it is empty, so an idle bridge costs nothing.
"""

from __future__ import annotations

import asyncio
import base64
import logging

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

    async def pull(self, sub: str, max_messages: int, *, wait: float = 0.0) -> list:
        """Received messages (raw protobuf ``ReceivedMessage``), possibly none: at once, or
        with ``wait`` > 0 as soon as any arrive within about ``wait`` seconds (the
        emulator's long poll answers empty a little before the call's deadline)."""
        req = _PullRequest(subscription=self.subscription_path(sub), max_messages=max_messages,
                           return_immediately=wait <= 0)
        try:
            resp = await self._pull(req, timeout=wait if wait > 0 else self.timeout)
        except grpc.aio.AioRpcError as exc:
            if wait > 0 and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return []
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


class Poller:
    """Pulls one subscription for a bridge that drains it.

    While the subscription has messages each pull returns at once. After an empty pull
    (which tells a bridge it has caught up) the next one waits in the emulator's long poll,
    which answers ~20-35 ms after a publish, or empty a little before the call's deadline.
    The deadline is long (30 s) because a long poll the client gives up on can still take
    messages when the emulator gets to it (e.g. one frozen by an emulator_restart fault):
    they come back only after their ack deadline. Short polling with a 5-50 ms idle backoff cost
    ~200 REST pulls a second for the reference system's idle bridges, about half a core of
    the harness and as much of the emulator (docs/benchmarks/bridges.md). A failed pull
    waits 0.5 s; ``pull`` returns [] then, and when ``stop`` is set, so a loop simply
    tries again or ends."""

    def __init__(self, grpc_client: PubSubGrpc, subscription: str, stop: asyncio.Event, *, wait: float = 30.0,
                 on_error=None) -> None:
        self.grpc = grpc_client
        self.subscription = subscription
        self.stop = stop
        self.wait = wait
        self.on_error = on_error
        self._empty = False
        self._stopped: asyncio.Future | None = None

    async def pull(self, max_messages: int) -> list:
        if self.stop.is_set():
            return []
        call = asyncio.ensure_future(self.grpc.pull(self.subscription, max_messages,
                                                    wait=self.wait if self._empty else 0.0))
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({call, self._stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not call.done():
            # Stopping: bridges stop once the run has drained, so nothing is leased to this
            # abandoned call (anything that was comes back after its ack deadline).
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            return []
        try:
            got = call.result()
        except PubSubRestError as exc:
            if self.on_error is not None:
                self.on_error()
            log.warning("pull %s failed: %s", self.subscription, exc)
            await stoppable_sleep(self.stop, 0.5)
            return []
        self._empty = not got
        return got

    def close(self) -> None:
        if self._stopped is not None:
            self._stopped.cancel()
