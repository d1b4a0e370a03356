"""A fake embedding API (the shape of OpenAI's and Vertex AI's batch embedding calls) as a
real HTTP server, with the quota real ones enforce: tokens per minute (and, like the other
fakes, requests per second), answered 429 with a Retry-After header when exceeded.

    POST /v1/embeddings  {"input": ["text", ...], "model": "...", "dimensions": 64}
      -> 200 {"object": "list", "model": ..., "data": [{"object": "embedding", "index": i,
              "embedding": [...]}], "usage": {"prompt_tokens": n, "total_tokens": n}}
      -> 429 {"error": ...}  Retry-After: whole seconds until the quota has room again
      -> 400 a malformed body, or a request larger than the whole token quota
    PUT /admin/behaviour, GET /admin/behaviour, GET /admin/stats, POST /admin/reset:
      as the other fakes (services/fakes/gateway.py), plus `tokens_per_minute`.

Vectors are deterministic: the same text gives the same unit vector in any process (a
generator seeded with the SHA-256 of the text), so a nearest-neighbour query for a known
text's vector must find that text. Tokens are counted as whitespace-separated words, a
stable stand-in for a tokenizer. Fault kinds (dependency_latency/_errors/_outage) drive it
through the same admin fields as the other fakes.

Configured by FAKE_EMBEDDING_DIM (64), FAKE_TOKENS_PER_MINUTE, FAKE_RATE_LIMIT,
FAKE_LATENCY_P50_MS, FAKE_LATENCY_P99_MS, FAKE_ERROR_RATE, FAKE_SEED, FAKE_ADMIN_TOKEN.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import random
import time
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from surgesim.services.common.runtime import create_app, env_float

from .gateway import Behaviour, BehaviourPatch, Stats, TokenBucket, admin_guard, lognormal_sampler

MAX_INPUTS = 2048  # OpenAI's per-request cap on inputs


class EmbeddingBehaviour(Behaviour):
    tokens_per_minute: float | None = Field(None, gt=0)
    """Tokens per minute beyond which it answers 429 (a bucket holding one minute's quota)."""


class EmbeddingPatch(BehaviourPatch):
    tokens_per_minute: float | None = Field(None, gt=0)


def embed(text: str, dim: int) -> list[float]:
    """The text's unit vector: the same text, the same vector, in every process."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).round(6).tolist()


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


class TokenQuota:
    """Tokens per minute as a bucket of one minute's quota refilled continuously: a request
    of n tokens passes if n are there; else `wait` says when they will be."""

    def __init__(self, per_minute: float) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.tokens = per_minute
        self.t = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def take(self, n: int) -> float:
        """0 if taken, else seconds until n tokens are there."""
        self._refill()
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


def build_app(behaviour: EmbeddingBehaviour | None = None, dim: int = 64, seed: int | None = None,
              admin_token: str | None = None) -> FastAPI:
    app = create_app("fake-embedding", title="Fake embedding API", description=__doc__.split("\n\n")[0])
    rng = random.Random(seed)
    state: dict[str, Any] = {"stats": Stats(), "tokens": 0, "token_limited": 0, "vectors": 0}
    admin = [Depends(admin_guard(admin_token))]

    def configure(b: EmbeddingBehaviour) -> None:
        state["behaviour"] = b
        state["sample"] = lognormal_sampler(b.latency_p50_ms, b.latency_p99_ms, rng)
        state["bucket"] = TokenBucket(b.rate_limit) if b.rate_limit else None
        state["quota"] = TokenQuota(b.tokens_per_minute) if b.tokens_per_minute else None
        state["outage_until"] = time.monotonic() + b.outage_seconds if b.outage and b.outage_seconds else None

    configure(behaviour or EmbeddingBehaviour())

    def in_outage() -> bool:
        b = state["behaviour"]
        if b.outage and state["outage_until"] is not None and time.monotonic() >= state["outage_until"]:
            configure(b.model_copy(update={"outage": False, "outage_seconds": None}))
            return False
        return b.outage

    def stats() -> dict[str, Any]:
        out = state["stats"].as_dict(keys=False)
        out.update(tokens=state["tokens"], token_limited=state["token_limited"], vectors=state["vectors"],
                   dimensions=dim)
        return out

    @app.put("/admin/behaviour", dependencies=admin)
    async def put_behaviour(patch: EmbeddingPatch) -> Any:
        merged = state["behaviour"].model_dump() | patch.model_dump(exclude_unset=True)
        if patch.outage is not None and "outage_seconds" not in patch.model_fields_set:
            merged["outage_seconds"] = None
        try:
            configure(EmbeddingBehaviour(**merged))
        except ValueError as exc:
            return JSONResponse({"error": "invalid behaviour", "detail": str(exc)}, status_code=400)
        return state["behaviour"].model_dump()

    @app.get("/admin/behaviour", dependencies=admin)
    async def get_behaviour() -> dict[str, Any]:
        return state["behaviour"].model_dump() | {"outage": in_outage()}

    @app.get("/admin/stats", dependencies=admin)
    async def get_stats(keys: bool = True) -> dict[str, Any]:
        return stats()

    @app.post("/admin/reset", dependencies=admin)
    async def reset() -> dict[str, Any]:
        state.update(stats=Stats(), tokens=0, token_limited=0, vectors=0)
        return stats()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        st: Stats = state["stats"]
        st.calls += 1
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            try:
                body = await request.json()
            except ValueError:
                body = None
            texts = body.get("input") if isinstance(body, dict) else None
            if isinstance(texts, str):
                texts = [texts]
            if (not isinstance(texts, list) or not texts or len(texts) > MAX_INPUTS
                    or not all(isinstance(t, str) and t for t in texts)):
                st.bad_requests += 1
                return JSONResponse({"error": {"message": f"input: 1 to {MAX_INPUTS} non-empty strings",
                                               "type": "invalid_request_error"}}, status_code=400)
            size = body.get("dimensions", dim)  # as OpenAI's text-embedding-3 models take it
            if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 4096:
                st.bad_requests += 1
                return JSONResponse({"error": {"message": "dimensions: an integer 1..4096",
                                               "type": "invalid_request_error"}}, status_code=400)
            tokens = sum(count_tokens(t) for t in texts)
            quota: TokenQuota | None = state["quota"]
            if quota is not None and tokens > quota.capacity:
                st.bad_requests += 1
                return JSONResponse({"error": {"message": f"request has {tokens} tokens, more than the "
                                               f"{quota.capacity:.0f} tokens-per-minute quota",
                                               "type": "invalid_request_error"}}, status_code=400)
            if in_outage():  # before the quotas: a call that cannot be served uses none
                await asyncio.sleep(state["sample"]())
                st.outage_rejections += 1
                return JSONResponse({"error": {"message": "service unavailable (outage)"}}, status_code=503)
            if state["bucket"] is not None and not state["bucket"].take():
                st.rate_limited += 1
                return JSONResponse({"error": {"message": "requests per second exceeded", "type": "rate_limit"}},
                                    status_code=429, headers={"Retry-After": "1"})
            if quota is not None and (wait := quota.take(tokens)) > 0:
                st.rate_limited += 1
                state["token_limited"] += 1
                return JSONResponse({"error": {"message": f"tokens per minute exceeded; {tokens} tokens "
                                               f"available in {wait:.1f} s", "type": "rate_limit"}},
                                    status_code=429, headers={"Retry-After": str(max(1, math.ceil(wait)))})
            await asyncio.sleep(state["sample"]())
            error_rate = state["behaviour"].error_rate
            if error_rate and rng.random() < error_rate:
                st.errors_injected += 1
                return JSONResponse({"error": {"message": "injected failure"}}, status_code=500)
            data = [{"object": "embedding", "index": i, "embedding": embed(t, size)} for i, t in enumerate(texts)]
            st.effects += 1
            state["tokens"] += tokens
            state["vectors"] += len(texts)
            return JSONResponse({"object": "list", "model": body.get("model") or f"fake-embedding-{size}",
                                 "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        finally:
            st.in_flight -= 1

    return app


def from_env() -> FastAPI:
    tpm, rate, p99 = (env_float(k, 0.0) for k in ("FAKE_TOKENS_PER_MINUTE", "FAKE_RATE_LIMIT", "FAKE_LATENCY_P99_MS"))
    behaviour = EmbeddingBehaviour(latency_p50_ms=env_float("FAKE_LATENCY_P50_MS", 0.0), latency_p99_ms=p99 or None,
                                   error_rate=env_float("FAKE_ERROR_RATE", 0.0), rate_limit=rate or None,
                                   tokens_per_minute=tpm or None)
    seed = os.environ.get("FAKE_SEED")
    return build_app(behaviour, dim=int(env_float("FAKE_EMBEDDING_DIM", 64)), seed=int(seed) if seed else None,
                     admin_token=os.environ.get("FAKE_ADMIN_TOKEN") or None)


#: `uvicorn surgesim.services.fakes.embedding:app`
app = from_env()
