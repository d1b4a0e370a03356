"""One factory for every push-subscription consumer (Meridian's reactors, Dog Finder's
matcher): POST /pubsub takes a Pub/Sub push envelope and answers 2xx to ack, non-2xx
to nack.

Answers, so that Pub/Sub does the right thing with each delivery:

* 200 handled, duplicate (already done) or ignored (an event type this reactor skips);
* 400 poison: the envelope or data cannot be decoded, or attributes.poison = "true";
  refused the same way on every attempt, so it lands in the dead-letter topic;
* 422 the external API refused the request permanently (4xx): dead-letters too;
* 503 retry later: the external API failed or timed out, or another delivery of the
  same event holds the claim;
* 500 the handler crashed, including the "bad deploy" switch: env BAD_PATTERN, a Pub/Sub
  filter expression, makes every matching message raise.
"""

from __future__ import annotations

import collections
import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from surgesim.pubsub_filter import parse_filter

from . import gcp, trace
from .apis import PermanentError, RetryableError
from .idempotency import ClaimState, ClaimStore, FirestoreClaims
from .pubsub_push import PoisonMessage, PushEvent, parse_envelope
from .runtime import create_app


class BadDeploy(RuntimeError):
    """Raised for messages matching BAD_PATTERN: the rehearsal's broken release."""


class Ignored(Exception):
    """The handler does not act on this event (e.g. a type its filter would have dropped)."""


@dataclass
class ReactorContext:
    name: str
    log: Any
    http: httpx.AsyncClient | None = None
    _db: Any = None
    _publisher: Any = None
    claims: ClaimStore | None = None
    counters: collections.Counter = field(default_factory=collections.Counter)

    @property
    def db(self):
        if self._db is None:
            self._db = gcp.firestore_async()
        return self._db

    @property
    def publisher(self):
        if self._publisher is None:
            self._publisher = gcp.publisher()
        return self._publisher


Handler = Callable[[ReactorContext, PushEvent], Awaitable[Any]]


def make_reactor(
    name: str,
    handler: Handler,
    *,
    event_types: Iterable[str] | Callable[[str], bool] | None = None,
    side_effect: bool = False,
    description: str = "",
    db: Any = None,
    claims: ClaimStore | None = None,
    http: httpx.AsyncClient | None = None,
) -> FastAPI:
    """A push endpoint around `handler(ctx, event)`.

    `event_types`: the types acted on, or a predicate on the type (others are acked as ignored: the emulator does not
    apply subscription filters unless the bridge does). `side_effect=True` wraps the
    handler in a claim on `processed_messages` keyed by reactor and event id, so redeliveries and
    duplicate publishes never repeat the effect. `db`, `claims`, `http` are injectable for
    tests; by default they come from the environment at startup.
    """
    if event_types is None or callable(event_types):
        accepts = event_types
    else:
        wanted = frozenset(event_types)
        accepts = wanted.__contains__
    bad_pattern = os.environ.get("BAD_PATTERN") or None
    bad = parse_filter(bad_pattern) if bad_pattern else None
    ctx_holder: dict[str, ReactorContext] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        client = http or httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
        ctx = ReactorContext(name, app.state.log, http=client, _db=db)
        if side_effect:
            ctx.claims = claims or FirestoreClaims(ctx.db, lease_s=float(os.environ.get("CLAIM_LEASE_SECONDS", "30")))
        ctx_holder["ctx"] = ctx
        app.state.ctx = ctx
        if bad_pattern:
            app.state.log.warning("BAD_PATTERN set: matching messages will fail", extra={"bad_pattern": bad_pattern})
        try:
            yield
        finally:
            if http is None:
                await client.aclose()
            if ctx._publisher is not None:
                ctx._publisher.stop()

    app = create_app(name, lifespan=lifespan, description=description or __doc__.split("\n\n")[0])
    log = app.state.log

    def answer(ctx: ReactorContext, status: int, outcome: str, event: PushEvent | None = None, **extra) -> JSONResponse:
        ctx.counters[outcome] += 1
        body = {"status": outcome, **extra}
        if event is not None:
            body.update(messageId=event.message_id, eventId=event.event_id)
        return JSONResponse(body, status_code=status)

    async def receive(request: Request) -> JSONResponse:
        ctx = ctx_holder["ctx"]
        ctx.counters["received"] += 1
        body = await request.body()
        try:
            event = parse_envelope(body)
        except PoisonMessage as exc:
            log.warning("poison message refused", extra={"reason": str(exc)})
            return answer(ctx, 400, "poison", reason=str(exc))
        parent = trace.parse_traceparent(event.traceparent)
        if parent is not None:
            trace.current.set(parent.child())
        fields = {"messageId": event.message_id, "eventId": event.event_id, "eventType": event.event_type,
                  "deliveryAttempt": event.delivery_attempt}
        if bad is not None and bad(event.attributes):
            log.error("bad deploy: handler raised on matching message", extra=fields)
            ctx.counters["bad_deploy"] += 1
            raise BadDeploy(f"BAD_PATTERN {bad_pattern!r} matched message {event.message_id}")
        if accepts is not None and not accepts(event.event_type):
            return answer(ctx, 200, "ignored", event)

        claim = None
        if side_effect:
            assert ctx.claims is not None
            # One claim per reactor and event: billing's claim must not stop notification's SMS.
            claim = await ctx.claims.claim(f"{name}:{event.event_id}")
            if claim.state is ClaimState.DONE:
                log.info("duplicate delivery acked without effect", extra=fields)
                return answer(ctx, 200, "duplicate", event)
            if claim.state is ClaimState.BUSY:
                return answer(ctx, 503, "busy", event, reason="another delivery of this event is in progress")
        try:
            result = await handler(ctx, event)
        except Ignored as exc:
            if claim is not None:
                await ctx.claims.complete(claim, {"ignored": str(exc)})
            return answer(ctx, 200, "ignored", event, reason=str(exc))
        except RetryableError as exc:
            if claim is not None:
                await ctx.claims.release(claim, str(exc))
            log.warning("transient failure, nack", extra={**fields, "error": str(exc)})
            return answer(ctx, 503, "retry", event, reason=str(exc))
        except PermanentError as exc:
            if claim is not None:
                await ctx.claims.release(claim, str(exc))
            log.error("permanent failure, refusing message", extra={**fields, "error": str(exc)})
            return answer(ctx, 422, "refused", event, reason=str(exc))
        except Exception as exc:
            if claim is not None:
                await ctx.claims.release(claim, f"{type(exc).__name__}: {exc}")
            raise
        if claim is not None:
            await ctx.claims.complete(claim, result if isinstance(result, (dict, str, int, float, type(None))) else str(result))
        log.info("handled", extra={**fields, "result": result})
        return answer(ctx, 200, "handled", event, result=result)

    # Eventarc / push subscriptions default to "/"; the systems name /pubsub.
    app.add_api_route("/pubsub", receive, methods=["POST"], summary="Pub/Sub push endpoint")
    app.add_api_route("/", receive, methods=["POST"], include_in_schema=False)

    @app.get("/metrics", summary="Counters of this process's deliveries by outcome")
    async def metrics() -> dict[str, int]:
        return dict(ctx_holder["ctx"].counters) if "ctx" in ctx_holder else {}

    return app
