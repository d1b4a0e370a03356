"""Calling an external API (SMS gateway, billing API, a shipper's webhook) the way a
reactor must: a timeout, the trace passed on, an idempotency key, and the answer sorted
into "retry later" (nack) or "never going to work" (dead-letter)."""

from __future__ import annotations

from typing import Any

import httpx

from . import trace


class RetryableError(Exception):
    """Timeout, connection failure, 429 or 5xx: nack and let Pub/Sub redeliver."""


class PermanentError(Exception):
    """A 4xx the caller cannot fix by retrying (bad phone number, unknown account)."""


async def call_api(
    http: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    idempotency_key: str,
    timeout: float = 10.0,
    method: str = "POST",
) -> dict[str, Any]:
    headers = {"Idempotency-Key": idempotency_key}
    ctx = trace.current.get()
    if ctx is not None:
        headers["traceparent"] = ctx.child().traceparent
    try:
        resp = await http.request(method, url, json=payload, headers=headers, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise RetryableError(f"{url} timed out after {timeout:g}s") from exc
    except httpx.TransportError as exc:
        raise RetryableError(f"{url} unreachable: {type(exc).__name__}: {exc}") from exc
    if resp.status_code == 429 or resp.status_code >= 500 or resp.status_code in (408, 409):
        raise RetryableError(f"{url} answered {resp.status_code}: {resp.text[:200]}")
    if resp.status_code >= 400:
        raise PermanentError(f"{url} answered {resp.status_code}: {resp.text[:200]}")
    try:
        body = resp.json()
    except ValueError:
        body = {"text": resp.text[:500]}
    return body if isinstance(body, dict) else {"body": body}
