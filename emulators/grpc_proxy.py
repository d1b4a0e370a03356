"""A pass-through gRPC proxy in front of the Pub/Sub emulator that counts what it does not report.

The emulator has no subscription metrics, and a pull subscription consumed by a user's
own process (streaming pull with the official client) acks straight to it. Pointing that
process's ``PUBSUB_EMULATOR_HOST`` at this proxy changes nothing for it -- every call is
forwarded as raw bytes, unknown methods included -- while the proxy reads the few
messages it needs with the ``google.pubsub_v1`` protobuf types:

* ``Publish``: messages per topic (from the response's message ids);
* ``Pull`` / ``StreamingPull`` responses: deliveries (ack id -> message id, publish time,
  delivery attempt), so an ack can be traced back to its message;
* ``Acknowledge`` and StreamingPull ``ack_ids``: acks per subscription;
* ``ModifyAckDeadline`` (and StreamingPull ``modify_deadline_*``) with 0 s: nacks.

    from surgesim.emulators.grpc_proxy import PubSubProxy
    with PubSubProxy(stack.endpoint("pubsub")) as proxy:      # 127.0.0.1:<free port>
        env = {**stack.env_vars(), **proxy.env_vars()}         # PUBSUB_EMULATOR_HOST -> proxy
        ...
        proxy.acked("telemetry-livemap")                       # messages acked
        proxy.outstanding("telemetry-livemap")                 # (count, oldest publish time)

``outstanding`` is what the proxy saw delivered and not yet acked. The backlog proper
(published - acked - dead-lettered - filtered, including messages never delivered) needs
the topic taps of :class:`~surgesim.emulators.metrics.MetricsSampler`: feed it the acked
message ids with :func:`sampler_sink` and it reports backlog and oldest-unacked rows for
the subscription as it does for push subscriptions.

REST is not proxied (the emulator serves it on its own port): acks over REST are not
counted here; publishes over REST are still counted by the sampler's taps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable

import grpc
from google.pubsub_v1 import types as _t

log = logging.getLogger(__name__)

# Raw protobuf classes (upb, C speed): proto-plus wrappers are ~10x slower to parse.
_PublishRequest = _t.PublishRequest.pb()
_PublishResponse = _t.PublishResponse.pb()
_PullRequest = _t.PullRequest.pb()
_PullResponse = _t.PullResponse.pb()
_AckRequest = _t.AcknowledgeRequest.pb()
_ModAckRequest = _t.ModifyAckDeadlineRequest.pb()
_StreamingPullRequest = _t.StreamingPullRequest.pb()
_StreamingPullResponse = _t.StreamingPullResponse.pb()

SERVICE = "/google.pubsub.v1."
PUBLISH = "/google.pubsub.v1.Publisher/Publish"
PULL = "/google.pubsub.v1.Subscriber/Pull"
STREAMING_PULL = "/google.pubsub.v1.Subscriber/StreamingPull"
ACKNOWLEDGE = "/google.pubsub.v1.Subscriber/Acknowledge"
MODIFY_ACK_DEADLINE = "/google.pubsub.v1.Subscriber/ModifyAckDeadline"
# Every google.pubsub.v1 / google.iam.v1 method but StreamingPull is unary; anything else
# is forwarded as a bidirectional stream, which carries any cardinality on the wire.
_UNARY_PREFIXES = (SERVICE, "/google.iam.v1.")
UNKNOWN_METHOD_WAIT = 0.2
"""Seconds a stream of an unknown method waits for the server's headers before the first write."""

# Headers gRPC sets itself; forwarding them as metadata is refused or duplicated.
_HOP_HEADERS = {"user-agent", "content-type", "te", "grpc-accept-encoding", "grpc-encoding", "grpc-timeout",
                "accept-encoding"}

_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]
# The official client pings every 30 s; the default server policy would answer with GOAWAY.
_SERVER_OPTIONS = _OPTIONS + [
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.so_reuseport", 0),
]


def short_name(path: str) -> str:
    """``projects/p/subscriptions/s`` -> ``s`` (``topics`` likewise); short names pass."""
    return path.rsplit("/", 1)[-1]


# ---- bookkeeping (pure, thread-safe) -----------------------------------------------------------
@dataclass
class SubscriptionBook:
    """One subscription as seen through the proxy."""

    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    """Distinct messages acked (a duplicate ack of an acked message is not counted again)."""
    ack_requests: int = 0
    """Ack ids received, whether or not the proxy saw their delivery."""
    unknown_acks: int = 0
    """Ack ids whose delivery the proxy did not see (e.g. pulled before it started, or via REST)."""
    nacked: int = 0
    outstanding: dict = field(default_factory=dict)
    """message id -> publish time (s since the epoch): delivered, not yet acked."""
    ack_ids: dict = field(default_factory=dict)
    """ack id -> message id, for the deliveries not yet acked or nacked."""
    by_message: dict = field(default_factory=dict)
    """message id -> its live ack ids (a redelivered message has several)."""
    recent_acks: "OrderedDict[str, None]" = field(default_factory=OrderedDict)


class ProxyBook:
    """Ack-id bookkeeping: deliveries, acks and nacks per subscription, publishes per topic.

    ``on_settled(subscription, message_ids)`` is called (outside the lock) with every batch
    of newly acked messages.
    """

    RECENT = 100_000
    """Acked message ids remembered per subscription, so a redelivered duplicate's second
    ack is not counted as a second message."""

    def __init__(self, on_settled: Callable[[str, list[str]], None] | None = None) -> None:
        self._lock = threading.Lock()
        self.subs: dict[str, SubscriptionBook] = {}
        self.topics: dict[str, int] = {}
        self.on_settled = on_settled

    def _sub(self, name: str) -> SubscriptionBook:
        name = short_name(name)
        book = self.subs.get(name)
        if book is None:
            book = self.subs[name] = SubscriptionBook()
        return book

    # ---- events --------------------------------------------------------------------------
    def publish(self, topic: str, n: int) -> None:
        topic = short_name(topic)
        with self._lock:
            self.topics[topic] = self.topics.get(topic, 0) + n

    def deliver(self, subscription: str, deliveries: Iterable[tuple[str, str, float, int]]) -> None:
        """``deliveries``: (ack_id, message_id, publish_time, delivery_attempt)."""
        with self._lock:
            b = self._sub(subscription)
            for ack_id, mid, published, attempt in deliveries:
                b.delivered += 1
                # delivery_attempt is only set under a dead-letter policy: also count a
                # message seen before (nacked, expired, or a duplicate of an acked one).
                if attempt > 1 or mid in b.outstanding or mid in b.recent_acks:
                    b.redelivered += 1
                b.by_message.setdefault(mid, []).append(ack_id)
                b.ack_ids[ack_id] = mid
                if mid not in b.outstanding and mid not in b.recent_acks:
                    b.outstanding[mid] = published

    def ack(self, subscription: str, ack_ids: Iterable[str]) -> list[str]:
        """Returns the message ids settled by these acks (each message once)."""
        settled = []
        with self._lock:
            b = self._sub(subscription)
            for ack_id in ack_ids:
                b.ack_requests += 1
                mid = b.ack_ids.pop(ack_id, None)
                if mid is None:
                    b.unknown_acks += 1
                    continue
                for other in b.by_message.pop(mid, ()):
                    b.ack_ids.pop(other, None)
                if b.outstanding.pop(mid, None) is not None:
                    b.acked += 1
                    settled.append(mid)
                    b.recent_acks[mid] = None
                    if len(b.recent_acks) > self.RECENT:
                        b.recent_acks.popitem(last=False)
        if settled and self.on_settled is not None:
            try:
                self.on_settled(short_name(subscription), settled)
            except Exception:  # a broken sink must not break the user's acks
                log.exception("grpc proxy: on_settled failed")
        return settled

    def modify_deadline(self, subscription: str, ack_ids: Iterable[str], seconds: Iterable[int] | int) -> None:
        """A 0 s deadline is a nack: the message stays outstanding, that ack id is spent."""
        ack_ids = list(ack_ids)
        secs = [seconds] * len(ack_ids) if isinstance(seconds, int) else list(seconds)
        with self._lock:
            b = self._sub(subscription)
            for ack_id, s in zip(ack_ids, secs):
                if s != 0:
                    continue
                b.nacked += 1
                mid = b.ack_ids.pop(ack_id, None)
                live = b.by_message.get(mid) if mid is not None else None
                if live is not None:
                    try:
                        live.remove(ack_id)
                    except ValueError:
                        pass
                    if not live:
                        del b.by_message[mid]

    # ---- queries -------------------------------------------------------------------------
    def acked(self, subscription: str) -> int:
        with self._lock:
            b = self.subs.get(short_name(subscription))
            return b.acked if b else 0

    def nacked(self, subscription: str) -> int:
        with self._lock:
            b = self.subs.get(short_name(subscription))
            return b.nacked if b else 0

    def delivered(self, subscription: str) -> int:
        with self._lock:
            b = self.subs.get(short_name(subscription))
            return b.delivered if b else 0

    def published(self, topic: str) -> int:
        with self._lock:
            return self.topics.get(short_name(topic), 0)

    def outstanding(self, subscription: str) -> tuple[int, float | None]:
        """(delivered and not acked, oldest such message's publish time or None)."""
        with self._lock:
            b = self.subs.get(short_name(subscription))
            if not b or not b.outstanding:
                return 0, None
            return len(b.outstanding), min(b.outstanding.values())

    def oldest_unacked_age(self, subscription: str, now: float | None = None) -> float:
        n, oldest = self.outstanding(subscription)
        if oldest is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - oldest)

    def totals(self) -> dict:
        with self._lock:
            subs = {name: {"delivered": b.delivered, "redelivered": b.redelivered, "acked": b.acked,
                           "nacked": b.nacked, "ack_requests": b.ack_requests, "unknown_acks": b.unknown_acks,
                           "outstanding": len(b.outstanding)}
                    for name, b in self.subs.items()}
            return {"topics": dict(self.topics), "subscriptions": subs}

    # ---- wire messages -------------------------------------------------------------------
    def observe_publish(self, request: bytes, response: bytes) -> None:
        # The request may be megabytes of payload; the topic is all we need from it, and
        # parsing is C-speed. The count comes from the response: messages that were stored.
        self.publish(_PublishRequest.FromString(request).topic, len(_PublishResponse.FromString(response).message_ids))

    def observe_pull(self, request: bytes, response: bytes) -> None:
        self._deliveries(_PullRequest.FromString(request).subscription, _PullResponse.FromString(response))

    def observe_ack(self, request: bytes) -> None:
        r = _AckRequest.FromString(request)
        self.ack(r.subscription, r.ack_ids)

    def observe_modack(self, request: bytes) -> None:
        r = _ModAckRequest.FromString(request)
        if r.ack_deadline_seconds == 0:
            self.modify_deadline(r.subscription, r.ack_ids, 0)

    def observe_stream_request(self, stream: "StreamState", request: bytes) -> None:
        r = _StreamingPullRequest.FromString(request)
        if r.subscription:
            stream.subscription = r.subscription
        if not stream.subscription:
            return
        if r.ack_ids:
            self.ack(stream.subscription, r.ack_ids)
        if r.modify_deadline_ack_ids and 0 in r.modify_deadline_seconds:
            self.modify_deadline(stream.subscription, r.modify_deadline_ack_ids, r.modify_deadline_seconds)

    def observe_stream_response(self, stream: "StreamState", response: bytes) -> None:
        if stream.subscription:
            self._deliveries(stream.subscription, _StreamingPullResponse.FromString(response))

    def _deliveries(self, subscription: str, response) -> None:
        if response.received_messages:
            self.deliver(subscription, [
                (rm.ack_id, rm.message.message_id,
                 rm.message.publish_time.seconds + rm.message.publish_time.nanos / 1e9, rm.delivery_attempt)
                for rm in response.received_messages])


@dataclass
class StreamState:
    subscription: str = ""
    """Only a stream's first request names its subscription."""


def sampler_sink(sampler, loop: asyncio.AbstractEventLoop) -> Callable[[str, list[str]], None]:
    """An ``on_settled`` that hands acked message ids to a ``MetricsSampler`` running in
    ``loop`` (its ledgers are not thread-safe, so the settle runs in the sampler's loop)::

        proxy = PubSubProxy(endpoint, on_settled=sampler_sink(sampler, loop))
        sampler.observe("telemetry-livemap")   # backlog rows from the start
    """

    def settle(sub: str, mids: list[str]) -> None:
        for mid in mids:
            sampler.settled(sub, mid)

    def sink(sub: str, mids: list[str]) -> None:
        loop.call_soon_threadsafe(settle, sub, mids)

    return sink


# ---- the proxy -----------------------------------------------------------------------------------
class _Forwarder(grpc.GenericRpcHandler):
    def __init__(self, proxy: "PubSubProxy") -> None:
        self.proxy = proxy
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details):
        method = details.method
        handler = self._handlers.get(method)
        if handler is None:
            p = self.proxy
            if method == STREAMING_PULL:
                async def streaming_pull(requests, context):
                    async for r in p._stream(method, requests, context, StreamState()):
                        yield r
                handler = grpc.stream_stream_rpc_method_handler(streaming_pull)
            elif method.startswith(_UNARY_PREFIXES):
                async def unary(request, context):
                    return await p._unary(method, request, context)
                handler = grpc.unary_unary_rpc_method_handler(unary)
            else:
                async def other(requests, context):
                    async for r in p._stream(method, requests, context, None):
                        yield r
                handler = grpc.stream_stream_rpc_method_handler(other)
            self._handlers[method] = handler
        return handler


def _metadata(context) -> list[tuple[str, str | bytes]]:
    return [(k, v) for k, v in (context.invocation_metadata() or ())
            if not k.startswith(":") and k not in _HOP_HEADERS]


class PubSubProxy:
    """``PubSubProxy(upstream="127.0.0.1:8085", port=0)``: start(), stop(), or ``with``.

    Runs a ``grpc.aio`` server and its upstream channel in one event loop in a thread.
    Queries (``acked``, ``outstanding``, ...) may be called from any thread.
    """

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0,
                 on_settled: Callable[[str, list[str]], None] | None = None) -> None:
        self.upstream = upstream
        self.host = host
        self.port = port
        self.book = ProxyBook(on_settled)
        self.errors = 0
        """Parse failures in the bookkeeping (the call itself was still forwarded)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None
        self._callables: dict[tuple[str, bool], object] = {}

    # ---- lifecycle -----------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def env_vars(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.endpoint}

    def start(self, timeout: float = 15.0) -> "PubSubProxy":
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="surgesim-grpc-proxy", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    async def _start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.upstream, options=_OPTIONS)
        self._server = grpc.aio.server(options=_SERVER_OPTIONS)
        self._server.add_generic_rpc_handlers((_Forwarder(self),))
        self.port = self._server.add_insecure_port(f"{self.host}:{self.port}")
        if not self.port:
            raise OSError(f"grpc proxy: cannot bind {self.host}")
        await self._server.start()

    def stop(self, grace: float = 1.0) -> None:
        """Cancels open streams after ``grace`` seconds; the port is closed on return."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(grace), loop).result(grace + 10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
            self._thread = None
            loop.close()

    async def _stop(self, grace: float) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            await self._server.wait_for_termination(grace + 5)
        if self._channel is not None:
            await self._channel.close()
        # let cancelled handler tasks finish their cleanup before the loop stops
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def __enter__(self) -> "PubSubProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- queries (see ProxyBook) -----------------------------------------------------------
    def acked(self, subscription: str) -> int:
        return self.book.acked(subscription)

    def nacked(self, subscription: str) -> int:
        return self.book.nacked(subscription)

    def delivered(self, subscription: str) -> int:
        return self.book.delivered(subscription)

    def published(self, topic: str) -> int:
        return self.book.published(topic)

    def outstanding(self, subscription: str) -> tuple[int, float | None]:
        return self.book.outstanding(subscription)

    def oldest_unacked_age(self, subscription: str, now: float | None = None) -> float:
        return self.book.oldest_unacked_age(subscription, now)

    def totals(self) -> dict:
        return self.book.totals()

    # ---- forwarding ------------------------------------------------------------------------
    def _observe(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # a message we cannot read must not fail the user's call
            self.errors += 1
            log.exception("grpc proxy: bookkeeping failed")

    def _callable(self, method: str, streaming: bool):
        key = (method, streaming)
        c = self._callables.get(key)
        if c is None:
            # no (de)serializers: bytes in, bytes out
            c = self._callables[key] = (self._channel.stream_stream(method) if streaming
                                        else self._channel.unary_unary(method))
        return c

    async def _unary(self, method: str, request: bytes, context) -> bytes:
        try:
            response = await self._callable(method, False)(request, timeout=context.time_remaining(),
                                                             metadata=_metadata(context))
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))
        if method == PUBLISH:
            self._observe(self.book.observe_publish, request, response)
        elif method == ACKNOWLEDGE:
            self._observe(self.book.observe_ack, request)
        elif method == PULL:
            self._observe(self.book.observe_pull, request, response)
        elif method == MODIFY_ACK_DEADLINE:
            self._observe(self.book.observe_modack, request)
        return response

    async def _stream(self, method: str, requests, context, stream: StreamState | None):
        call = self._callable(method, True)(timeout=context.time_remaining(), metadata=_metadata(context))
        book = self.book

        async def pump() -> None:
            try:
                if stream is None:
                    # A server may refuse a method on its headers alone (UNIMPLEMENTED as a
                    # trailers-only answer). A write racing that answer fails in gRPC core and
                    # turns the status into INTERNAL, so give the answer a moment to land first.
                    # StreamingPull skips this: its server sends headers after our first request.
                    try:
                        await asyncio.wait_for(asyncio.shield(call.initial_metadata()), UNKNOWN_METHOD_WAIT)
                    except asyncio.TimeoutError:
                        pass
                async for req in requests:
                    if stream is not None:
                        self._observe(book.observe_stream_request, stream, req)
                    await call.write(req)
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                pass  # the upstream call ended; its status reaches the client via the responses

        pumping = asyncio.ensure_future(pump())
        try:
            async for resp in call:
                if stream is not None:
                    self._observe(book.observe_stream_response, stream, resp)
                yield resp
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))
        finally:
            pumping.cancel()
            call.cancel()


def main(argv: list[str] | None = None) -> None:
    """``python -m surgesim.emulators.grpc_proxy --upstream 127.0.0.1:8085 [--port N]``:
    prints ``PUBSUB_EMULATOR_HOST=<proxy>``, runs until SIGINT/SIGTERM, then prints the
    totals as JSON."""
    import argparse
    import json
    import signal

    ap = argparse.ArgumentParser(prog="python -m surgesim.emulators.grpc_proxy", description=main.__doc__)
    ap.add_argument("--upstream", required=True, help="the Pub/Sub emulator, host:port")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with PubSubProxy(args.upstream, port=args.port) as proxy:
        print(f"PUBSUB_EMULATOR_HOST={proxy.endpoint}", flush=True)
        done.wait()
    print(json.dumps(proxy.totals(), sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
