"""The HTTP client every harness part uses to call a service: the Cloud Run fronts, the
push bridge and the trigger bridge (and `read_body`, how their ASGI servers read a request).

aiohttp rather than httpx: its C parser and connection pool cost much less CPU per request,
and its pool does not slow down as it grows, where one httpx pool with 100 connections
and 100 requests in flight managed ~40 req/s (docs/benchmarks/bridges.md). Every event and
every proxied command pays this cost on the same 2 cores as the services and the
emulators. Bodies pass through as bytes: no decompression, no added Accept-Encoding or
User-Agent.
"""

from __future__ import annotations

import asyncio

import aiohttp

#: What a failed request raises: refused or reset connections, and timeouts.
FAILURES = (aiohttp.ClientError, asyncio.TimeoutError)


async def read_body(receive) -> bytes:
    """An ASGI request's whole body (the harness's own servers: fronts, bridges, the job
    clock, the Run API)."""
    chunks, more = [], True
    while more:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    return b"".join(chunks)


IDLE_S = 1.0
"""A pooled connection idle this long is closed rather than reused. Servers close idle
keep-alive connections on their own clock (gunicorn after 2 s, uvicorn and Node after 5 s),
and a POST sent on one the server is closing fails with no answer; HTTP forbids sending a
POST again on its own (RFC 9112, 9.3.1), so the pool must drop connections before the
server does. The greetings example's gunicorn receiver answered 1-2 such 503s a run with
30 s here."""


def session(timeout: float) -> aiohttp.ClientSession:
    """A session with unlimited keep-alive connections, each dropped after IDLE_S unused;
    create it inside the loop that uses it."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=IDLE_S),
        timeout=aiohttp.ClientTimeout(total=timeout), auto_decompress=False, trust_env=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent"))


async def post_status(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict,
                      timeout: float | None = None) -> int:
    """POST and read the whole answer; its status. Raises one of FAILURES."""
    kw = {"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout is not None else {}
    async with http.post(url, data=body, headers=headers, **kw) as r:
        await r.read()
        return r.status
