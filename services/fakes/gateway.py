"""A fake external API (SMS gateway, billing API, or any JSON endpoint) as a real HTTP
server whose behaviour changes at run time, and which counts every call and every
idempotency key so a test can prove a side effect happened exactly once.

    PUT  /admin/behaviour  {"latency_p50_ms": 200, "latency_p99_ms": 600, "error_rate": 0.01,
                            "outage": false, "outage_seconds": null, "rate_limit": 1000}
    GET  /admin/behaviour
    GET  /admin/stats      calls, effects, unique_keys, duplicate_calls, per_key (?keys=0 omits it)
    POST /admin/reset      zero the counters (and forget the keys)

Kinds: `sms` (POST /v1/messages {to, body}), `billing` (POST /v1/charges {parcelId,
amountCents, currency}), `generic` (any method, any path: 200 {"ok": true}). A call with
an Idempotency-Key that already succeeded is answered with the first answer and header
`Idempotent-Replayed: true`, and does not count as a new effect, as real payment APIs do.

With FAKE_ADMIN_TOKEN set (a live run sets it to the run's token), the admin API answers
only `Authorization: Bearer <that token>`: 401 without one, 403 with another; so no other
local process can start an outage or zero the counters a verdict reads.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import math
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from surgesim.services.common.runtime import create_app, env_float

Kind = Literal["sms", "billing", "generic"]
Z99 = 2.3263478740408408  # the standard normal's 99th percentile
NOT_JSON = object()


class Behaviour(BaseModel):
    """Everything a test or the fault injector may change while the fake runs."""

    model_config = ConfigDict(extra="forbid")

    latency_p50_ms: float = Field(0.0, ge=0, le=600_000)
    latency_p99_ms: float | None = Field(None, ge=0, le=600_000)
    """None: every call takes exactly p50."""
    error_rate: float = Field(0.0, ge=0, le=1)
    """Fraction of calls answered 500 (without effect)."""
    outage: bool = False
    """Answer 503 to every call."""
    outage_seconds: float | None = Field(None, gt=0, le=86400)
    """With outage: true, end the outage by itself after this many seconds."""
    rate_limit: float | None = Field(None, gt=0)
    """Calls per second beyond which it answers 429 (token bucket, burst = 1 s of calls)."""

    @model_validator(mode="after")
    def _ordered(self) -> "Behaviour":
        if self.latency_p99_ms is not None and self.latency_p99_ms < self.latency_p50_ms:
            raise ValueError("latency_p99_ms must be >= latency_p50_ms")
        return self


class BehaviourPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_p50_ms: float | None = Field(None, ge=0, le=600_000)
    latency_p99_ms: float | None = Field(None, ge=0, le=600_000)
    error_rate: float | None = Field(None, ge=0, le=1)
    outage: bool | None = None
    outage_seconds: float | None = Field(None, gt=0, le=86400)
    rate_limit: float | None = Field(None, gt=0)


def lognormal_sampler(p50_ms: float, p99_ms: float | None, rng: random.Random):
    """Seconds, log-normal with the given median and 99th percentile."""
    if p50_ms <= 0:
        return lambda: 0.0
    if not p99_ms or p99_ms <= p50_ms:
        return lambda: p50_ms / 1000.0
    mu, sigma = math.log(p50_ms), (math.log(p99_ms) - math.log(p50_ms)) / Z99
    return lambda: rng.lognormvariate(mu, sigma) / 1000.0


@dataclass
class Stats:
    calls: int = 0
    effects: int = 0
    replayed: int = 0
    errors_injected: int = 0
    outage_rejections: int = 0
    rate_limited: int = 0
    bad_requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    per_key: collections.Counter = field(default_factory=collections.Counter)
    effects_per_key: collections.Counter = field(default_factory=collections.Counter)

    def as_dict(self, keys: bool = True) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not isinstance(v, collections.Counter)}
        out["unique_keys"] = len(self.per_key)
        out["duplicate_calls"] = sum(n - 1 for n in self.per_key.values())
        out["duplicate_keys"] = sum(1 for n in self.per_key.values() if n > 1)
        out["keys_with_more_than_one_effect"] = sum(1 for n in self.effects_per_key.values() if n > 1)
        if keys:
            out["per_key"] = dict(self.per_key)
        return out


class TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.t = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FakeApi:
    def __init__(self, kind: Kind, behaviour: Behaviour, seed: int | None = None) -> None:
        self.kind = kind
        self.rng = random.Random(seed)
        self.stats = Stats()
        self.answers: dict[str, tuple[int, dict]] = {}
        self.set(behaviour)

    def set(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.sample = lognormal_sampler(behaviour.latency_p50_ms, behaviour.latency_p99_ms, self.rng)
        self.bucket = TokenBucket(behaviour.rate_limit) if behaviour.rate_limit else None
        self.outage_until = (time.monotonic() + behaviour.outage_seconds) if behaviour.outage and behaviour.outage_seconds else None

    def in_outage(self) -> bool:
        if not self.behaviour.outage:
            return False
        if self.outage_until is not None and time.monotonic() >= self.outage_until:
            self.behaviour = self.behaviour.model_copy(update={"outage": False, "outage_seconds": None})
            self.outage_until = None
            return False
        return True

    def validate(self, path: str, body: Any) -> str | None:
        """What is wrong with a request to this kind of API (None: fine)."""
        if self.kind == "generic":
            return None
        if not isinstance(body, dict):
            return "body must be a JSON object"
        if self.kind == "sms":
            if path != "/v1/messages":
                return "POST /v1/messages"
            to, text = body.get("to"), body.get("body")
            if not isinstance(to, str) or not to.startswith("+") or not to[1:].isdigit() or not 8 <= len(to) <= 16:
                return "to: an E.164 phone number such as +447700900123"
            if not isinstance(text, str) or not text or len(text) > 1600:
                return "body: 1 to 1600 characters"
        if self.kind == "billing":
            if path != "/v1/charges":
                return "POST /v1/charges"
            amount = body.get("amountCents")
            if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
                return "amountCents: a positive integer"
            if not isinstance(body.get("parcelId"), str) or not body["parcelId"]:
                return "parcelId: required"
        return None

    def effect(self, body: Any) -> tuple[int, dict]:
        if self.kind == "sms":
            return 201, {"sid": "SM" + uuid.uuid4().hex, "status": "queued", "to": body["to"]}
        if self.kind == "billing":
            return 201, {"chargeId": "ch_" + uuid.uuid4().hex[:24], "status": "succeeded", "amountCents": body["amountCents"]}
        return 200, {"ok": True}


def admin_guard(token: str | None):
    """A dependency for the admin routes: the run's token as a bearer token (None: open)."""

    async def check(request: Request) -> None:
        if token is None:
            return
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise HTTPException(401, "the admin API needs the run's token: Authorization: Bearer <token>")
        if not hmac.compare_digest(auth[len("Bearer "):].encode(), token.encode()):
            raise HTTPException(403, "not this run's admin token")

    return check


def build_app(kind: Kind = "generic", behaviour: Behaviour | None = None, seed: int | None = None,
              admin_token: str | None = None) -> FastAPI:
    fake = FakeApi(kind, behaviour or Behaviour(), seed)
    app = create_app(f"fake-{kind}", title=f"Fake {kind} API", description=__doc__.split("\n\n")[0])
    app.state.fake = fake
    lock = asyncio.Lock()
    admin = [Depends(admin_guard(admin_token))]

    @app.put("/admin/behaviour", summary="Replace the named behaviour fields; the rest stay", dependencies=admin)
    async def put_behaviour(patch: BehaviourPatch) -> dict[str, Any]:
        merged = fake.behaviour.model_dump() | patch.model_dump(exclude_unset=True)
        if patch.outage is not None and "outage_seconds" not in patch.model_fields_set:
            merged["outage_seconds"] = None
        try:
            fake.set(Behaviour(**merged))
        except ValueError as exc:
            return JSONResponse({"error": "invalid behaviour", "detail": str(exc)}, status_code=400)
        app.state.log.info("behaviour changed", extra={"behaviour": fake.behaviour.model_dump()})
        return fake.behaviour.model_dump()

    @app.get("/admin/behaviour", dependencies=admin)
    async def get_behaviour() -> dict[str, Any]:
        return fake.behaviour.model_dump() | {"outage": fake.in_outage()}

    @app.get("/admin/stats", dependencies=admin)
    async def get_stats(keys: bool = True) -> dict[str, Any]:
        return fake.stats.as_dict(keys=keys)

    @app.post("/admin/reset", dependencies=admin)
    async def reset() -> dict[str, Any]:
        fake.stats = Stats()
        fake.answers.clear()
        return fake.stats.as_dict()

    async def call(request: Request, path: str) -> JSONResponse:
        st = fake.stats
        st.calls += 1
        key = request.headers.get("idempotency-key")
        if key:
            st.per_key[key] += 1
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            if fake.bucket is not None and not fake.bucket.take():
                st.rate_limited += 1
                return JSONResponse({"error": "rate limited"}, status_code=429, headers={"Retry-After": "1"})
            await asyncio.sleep(fake.sample())
            if fake.in_outage():
                st.outage_rejections += 1
                return JSONResponse({"error": "service unavailable (outage)"}, status_code=503)
            if fake.behaviour.error_rate and fake.rng.random() < fake.behaviour.error_rate:
                st.errors_injected += 1
                return JSONResponse({"error": "injected failure"}, status_code=500)
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = NOT_JSON
            problem = fake.validate("/" + path, body)
            if problem:
                st.bad_requests += 1
                return JSONResponse({"error": "bad request", "detail": problem}, status_code=400)
            async with lock:  # check-and-record of the key must not interleave
                if key and key in fake.answers:
                    st.replayed += 1
                    status, answer = fake.answers[key]
                    return JSONResponse(answer, status_code=status, headers={"Idempotent-Replayed": "true"})
                status, answer = fake.effect(body)
                st.effects += 1
                if key:
                    fake.answers[key] = (status, answer)
                    st.effects_per_key[key] += 1
            return JSONResponse(answer, status_code=status)
        finally:
            st.in_flight -= 1

    app.add_api_route("/{path:path}", call, methods=["GET", "POST", "PUT", "PATCH", "DELETE"], summary=f"The fake {kind} API")
    return app


def from_env(kind: Kind | None = None) -> FastAPI:
    """The fake configured by FAKE_KIND (unless `kind` is given), FAKE_LATENCY_P50_MS, FAKE_LATENCY_P99_MS,
    FAKE_ERROR_RATE, FAKE_RATE_LIMIT, FAKE_SEED, FAKE_ADMIN_TOKEN."""
    rate = env_float("FAKE_RATE_LIMIT", 0.0)
    p99 = env_float("FAKE_LATENCY_P99_MS", 0.0)
    behaviour = Behaviour(
        latency_p50_ms=env_float("FAKE_LATENCY_P50_MS", 0.0),
        latency_p99_ms=p99 or None,
        error_rate=env_float("FAKE_ERROR_RATE", 0.0),
        rate_limit=rate or None,
    )
    seed = os.environ.get("FAKE_SEED")
    kind = kind or os.environ.get("FAKE_KIND", "generic")  # type: ignore[assignment]
    if kind not in ("sms", "billing", "generic"):
        raise RuntimeError(f"FAKE_KIND must be sms, billing or generic, got {kind!r}")
    return build_app(kind, behaviour, int(seed) if seed else None, admin_token=os.environ.get("FAKE_ADMIN_TOKEN") or None)


#: `uvicorn surgesim.services.fakes.gateway:app` (kind from FAKE_KIND) or a fixed kind:
app = from_env()
sms_app = from_env("sms")
billing_app = from_env("billing")
generic_app = from_env("generic")
