"""A local Cloud Run front: one async reverse proxy per service that behaves like the
Cloud Run service in front of it would.

* **concurrency and max instances**: at most ``concurrency`` requests per instance and
  ``max_instances`` instances; a request that finds no free slot waits up to
  ``pending_timeout`` and then gets 429, as Cloud Run answers when it cannot scale;
* **cold starts**: a request that needs a new instance waits that instance's start-up
  (drawn from the plan's ``cold_start`` log-normal); ``min_instances`` are warm from the
  start; an instance idle longer than ``scale_down_delay`` goes away;
* **who may invoke** (``run.invoker``): a private service (``invokers`` a set of
  ``serviceAccount:...`` members) takes only requests with an ID token of this run's
  issuer (emulators/identity.py) for its URL: none or one that does not verify gets 401,
  a valid one whose ``email`` is not on the list 403; ``allUsers`` (or ``invokers=None``)
  is public. As Cloud Run, ``X-Serverless-Authorization`` is checked instead of
  ``Authorization`` when present, and a checked token is forwarded with its signature
  replaced by ``SIGNATURE_REMOVED_BY_GOOGLE``; everything else passes through;
* **only through the front**: with a ``secret``, every forwarded request carries it in
  ``X-Surgesim-Front-Secret`` (services/common/runtime.py refuses requests without it,
  so a service's own port is no way around this check);
* **measurement**: request latency into a ``surgesim.histogram.Histogram`` per route
  (the path), instance count, requests, 429s and 5xx.

The service process itself runs as one ordinary process (uvicorn); the front models the
instances' slots and start-up, not separate processes (docs/bridges.md).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from surgesim.histogram import Histogram

from . import service_http
from .identity import Issuer, strip_signature

#: The header the front adds so a service can tell its front from any other local caller.
FRONT_SECRET_HEADER = "x-surgesim-front-secret"
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-authorization",
               "host", "content-length"}


@dataclass
class FrontSettings:
    concurrency: int = 80
    max_instances: int = 100
    min_instances: int = 0
    cold_start_p50: float = 1.5
    cold_start_p99: float | None = 4.0
    scale_down_delay: float = 900.0
    pending_timeout: float = 10.0
    request_timeout: float = 300.0

    @classmethod
    def from_plan(cls, sp) -> "FrontSettings":
        """From a ``surgesim.schema.ServicePlan``."""
        return cls(concurrency=sp.concurrency, max_instances=sp.max_instances, min_instances=sp.min_instances,
                   cold_start_p50=sp.cold_start.p50, cold_start_p99=sp.cold_start.p99,
                   scale_down_delay=sp.scale_down_delay, pending_timeout=sp.pending_timeout,
                   request_timeout=sp.request_timeout)


def cold_start_sample(rng: random.Random, p50: float, p99: float | None) -> float:
    if p99 is None or p99 <= p50 or p50 <= 0:
        return p50
    sigma = math.log(p99 / p50) / 2.3263478740408408
    return p50 * math.exp(sigma * rng.gauss(0.0, 1.0))


@dataclass
class Instance:
    ready_at: float
    busy: int = 0
    last_done: float = 0.0


@dataclass
class FrontStats:
    requests: int = 0
    rejected: int = 0
    unauthorized: int = 0
    errors: int = 0
    """Answers 5xx (the upstream's, or the front's 503/504 when it got none)."""
    client_errors: int = 0
    """The upstream's 4xx answers other than 429 (the front's own 429s are `rejected`)."""
    cold_starts: int = 0
    peak_instances: int = 0
    latency: dict[str, Histogram] = field(default_factory=dict)


class Slots:
    """The admission logic, independent of HTTP (unit-tested on its own)."""

    def __init__(self, s: FrontSettings, rng: random.Random | None = None, clock=time.monotonic) -> None:
        self.s = s
        self.rng = rng or random.Random(0)
        self.clock = clock
        now = clock()
        self.instances: list[Instance] = [Instance(ready_at=now, last_done=now) for _ in range(s.min_instances)]
        self.cold_starts = 0
        self._freed = asyncio.Condition()

    def try_acquire(self) -> tuple[Instance, float] | None:
        """(instance, seconds to wait for it to start) or None when all slots are taken."""
        now = self.clock()
        free = [i for i in self.instances if i.busy < self.s.concurrency]
        if free:
            # fill the busiest warm instance first so idle ones can scale down, as Cloud Run packs
            inst = max(free, key=lambda i: (i.ready_at <= now, i.busy))
            inst.busy += 1
            return inst, max(0.0, inst.ready_at - now)
        if len(self.instances) < self.s.max_instances:
            delay = cold_start_sample(self.rng, self.s.cold_start_p50, self.s.cold_start_p99)
            inst = Instance(ready_at=now + delay, busy=1, last_done=now)
            self.instances.append(inst)
            self.cold_starts += 1
            return inst, delay
        return None

    async def acquire(self) -> tuple[Instance, float] | None:
        got = self.try_acquire()
        if got is not None:
            return got
        deadline = self.clock() + self.s.pending_timeout
        async with self._freed:
            while True:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._freed.wait(), remaining)
                except asyncio.TimeoutError:
                    return None
                got = self.try_acquire()
                if got is not None:
                    return got

    async def release(self, inst: Instance) -> None:
        inst.busy -= 1
        inst.last_done = self.clock()
        async with self._freed:
            self._freed.notify(1)

    def scale_down(self) -> int:
        now = self.clock()
        keep, removed = [], 0
        for inst in sorted(self.instances, key=lambda i: -i.last_done):
            idle = inst.busy == 0 and now - inst.last_done > self.s.scale_down_delay
            if idle and len(keep) >= self.s.min_instances:
                removed += 1
            else:
                keep.append(inst)
        self.instances = keep
        return removed


class Front:
    """ASGI app: ``uvicorn.Server(uvicorn.Config(front, ...))`` serves it."""

    def __init__(self, name: str, upstream: str, settings: FrontSettings, *, issuer: Issuer | None = None,
                 invokers: frozenset[str] | None = None, audiences: list[str] | None = None,
                 secret: str | None = None, seed: int = 0) -> None:
        """invokers: the IAM members allowed to invoke (None: public); audiences: the
        service's URLs a token's ``aud`` must be (or be under); secret: added to every
        forwarded request (FRONT_SECRET_HEADER)."""
        if invokers is not None and issuer is None:
            raise ValueError(f"front {name}: an invoker list needs the run's token issuer to check tokens")
        self.name = name
        self.upstream = upstream.rstrip("/")
        self.s = settings
        self.issuer = issuer
        self.invokers = invokers
        self.audiences = audiences
        self.secret = secret
        self.seed = seed
        self.stats = FrontStats()
        self.inflight: Counter[str] = Counter()  # requests on their way, per upstream URL
        self.slots: Slots | None = None
        self.http = None  # a service_http.session, made in the serving loop
        self._reaper: asyncio.Task | None = None

    def instance_count(self) -> int:
        return len(self.slots.instances) if self.slots else self.s.min_instances

    async def _startup(self) -> None:
        self.slots = Slots(self.s, random.Random(self.seed))
        self.http = service_http.session(self.s.request_timeout)
        self._reaper = asyncio.create_task(self._reap())

    async def _shutdown(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        if self.http:
            await self.http.close()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, max(0.05, self.s.scale_down_delay / 4)))
            self.slots.scale_down()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await self._startup()
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await self._shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if self.slots is None:
            await self._startup()
        t0 = time.monotonic()
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if self.issuer is not None:
            # Cloud Run checks X-Serverless-Authorization instead when a caller sends both
            auth_header = "x-serverless-authorization" if "x-serverless-authorization" in headers else "authorization"
            checked = self.issuer.check_invoker(headers.get(auth_header), self.invokers, self.audiences)
            if checked.status != 200:
                self.stats.unauthorized += 1
                return await _respond(send, checked.status, f"{checked.status}: {checked.reason}\n".encode())
            if checked.reason != "public":
                headers[auth_header] = strip_signature(headers[auth_header])
        if self.secret is not None:
            headers[FRONT_SECRET_HEADER] = self.secret
        else:
            headers.pop(FRONT_SECRET_HEADER, None)
        body = await service_http.read_body(receive)
        self.stats.requests += 1
        got = await self.slots.acquire()
        if got is None:
            self.stats.rejected += 1
            return await _respond(send, 429, b"Rate exceeded: no available instance\n")
        inst, start_delay = got
        self.stats.peak_instances = max(self.stats.peak_instances, len(self.slots.instances))
        self.stats.cold_starts = self.slots.cold_starts
        try:
            if start_delay > 0:
                await asyncio.sleep(start_delay)
            path = scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
            fwd = {k: v for k, v in headers.items() if k not in HOP_HEADERS}
            status, content, rh = await self._forward(scope["method"], path, body, fwd)
        finally:
            await self.slots.release(inst)
        if status >= 500:
            self.stats.errors += 1
        elif 400 <= status < 500 and status != 429:
            self.stats.client_errors += 1
        route = scope["path"]
        self.stats.latency.setdefault(route, Histogram()).record(time.monotonic() - t0)
        out = [(k.encode(), v.encode()) for k, v in rh.items() if k.lower() not in HOP_HEADERS]
        await _respond(send, status, content, out)

    async def _forward(self, method: str, path: str, body: bytes, headers: dict) -> tuple[int, bytes, Mapping]:
        """One request to the current revision. A connection that fails on a revision the
        front has just moved away from is sent again to the new one: Cloud Run routes no
        request to a revision it is retiring, so a deploy costs no request."""
        for _ in range(2):
            upstream = self.upstream
            self.inflight[upstream] += 1
            try:
                async with self.http.request(method, upstream + path, data=body, headers=headers) as r:
                    return r.status, await r.read(), r.headers
            except asyncio.TimeoutError:
                return 504, b"upstream request timeout\n", {}
            except service_http.FAILURES:
                if self.upstream == upstream:
                    return 503, b"service unavailable\n", {}
            finally:
                self.inflight[upstream] -= 1
        return 503, b"service unavailable\n", {}

    def idle(self, upstream: str) -> bool:
        """No request of this front is on its way to ``upstream`` (a retired revision)."""
        return self.inflight[upstream.rstrip("/")] == 0


async def _respond(send, status: int, body: bytes, headers: list | None = None) -> None:
    hs = list(headers or [])
    if not any(k.lower() == b"content-type" for k, _ in hs):
        hs.append((b"content-type", b"text/plain; charset=utf-8"))
    hs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hs})
    await send({"type": "http.response.body", "body": body})


async def serve(app, port: int, host: str = "127.0.0.1", *, lifespan: str = "on"):
    """Serve an ASGI app in this loop; returns the uvicorn server (stop it with ``stop``).
    Raises OSError when the port is taken: the socket is bound here, because uvicorn
    binding it would exit the whole process on failure."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    server = uvicorn.Server(uvicorn.Config(app, interface="asgi3", log_level="warning", lifespan=lifespan,
                                           access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            sock.close()
            task.result()
        await asyncio.sleep(0.01)
    server._surgesim_task, server._surgesim_sock = task, sock  # noqa: SLF001 -- for stop()
    return server


async def stop(server) -> None:
    server.should_exit = True
    await server._surgesim_task  # noqa: SLF001
    server._surgesim_sock.close()  # noqa: SLF001
