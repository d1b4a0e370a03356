"""Where does a live run's command latency come from? (docs/benchmarks/live.md)

Offers ci_spike's command traffic (4 routes, parcels walked created -> assigned -> out
for delivery -> delivered one second apart) at a fixed rate, open model, to the Meridian
command service on the real Firestore emulator, along three paths:

    direct     a raw asyncio-streams HTTP/1.1 client (keep-alive pool, no httpx) straight
               to the service process: the service + Firestore emulator alone
    front      the same client through a Cloud Run front (emulators/front.py) served in
               this process
    (the full harness is measured by `surgesim live`, whose summary.json has
     latency/... from the intended time, response/... from the actual send, lateness)

Latency counts from the intended send time (no coordinated omission); `lateness` is how
late this client sent.

    .venv/bin/python bench/bench_live.py --rates 48,144 --seconds 20
    .venv/bin/python bench/bench_live.py --only direct --rates 144,300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class RawClient:
    """Minimal HTTP/1.1 keep-alive client over asyncio streams: a pool of connections, each
    sending one request at a time. Costs tens of microseconds per request."""

    def __init__(self, host: str, port: int, conns: int = 32) -> None:
        self.host, self.port = host, port
        self.pool: asyncio.Queue = asyncio.Queue()
        self.conns = conns
        self.made = 0

    async def _conn(self):
        if self.pool.empty() and self.made < self.conns:
            self.made += 1
            return await asyncio.open_connection(self.host, self.port)
        return await self.pool.get()

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        r, w = await self._conn()
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        w.write(head.encode() + body)
        status_line = await r.readline()
        length = 0
        while (line := await r.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            if k.lower() == "content-length":
                length = int(v)
        await r.readexactly(length)
        self.pool.put_nowait((r, w))
        return int(status_line.split()[1])


def chain(pid: str) -> list[tuple[str, dict]]:
    rid = lambda: uuid.uuid4().hex  # noqa: E731
    return [("/shipments", {"requestId": rid(), "parcelId": pid, "shipperId": "s1",
                            "recipient": {"name": "R", "phone": "+447700900123"},
                            "destination": {"lat": 51.5, "lng": -0.1, "address": "x"}, "weightKg": 2.0}),
            (f"/parcels/{pid}/assign", {"requestId": rid(), "driverId": "d1", "vehicleId": "v1"}),
            (f"/parcels/{pid}/out-for-delivery", {"requestId": rid()}),
            (f"/parcels/{pid}/delivered", {"requestId": rid(), "signedBy": "R"})]


async def offer(url: str, rate: float, seconds: float, conns: int = 32) -> dict:
    """Open model: parcels start at rate/4 per second (Poisson); each parcel's 4 commands
    are due 1 s apart, so every route runs at rate/4 and the total at `rate`."""
    host, port = url.removeprefix("http://").split(":")
    client = RawClient(host, int(port), conns)
    rng = random.Random(1)
    due: list[tuple[float, str, bytes, str]] = []
    t = 0.0
    while t < seconds:
        t += rng.expovariate(rate / 4)
        pid = uuid.uuid4().hex[:16]
        for i, (path, body) in enumerate(chain(pid)):
            due.append((t + i * 1.0, path, json.dumps(body).encode(), ["create", "assign", "out", "delivered"][i]))
    due.sort()
    lat: dict[str, list[float]] = {}
    late: list[float] = []
    codes: dict[int, int] = {}
    tasks = set()
    t0 = time.perf_counter()

    async def one(intended: float, path: str, body: bytes, route: str) -> None:
        late.append(time.perf_counter() - t0 - intended)
        try:
            code = await client.post(path, body, {"Content-Type": "application/json"})
        except Exception:  # noqa: BLE001
            code = 0
        codes[code] = codes.get(code, 0) + 1
        lat.setdefault(route, []).append(time.perf_counter() - t0 - intended)

    for intended, path, body, route in due:
        d = t0 + intended - time.perf_counter()
        if d > 0:
            await asyncio.sleep(d)
        task = asyncio.create_task(one(intended, path, body, route))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    pct = lambda xs, q: round(float(np.percentile(xs, q)) * 1000, 1) if xs else None  # noqa: E731
    return {"rate": rate, "n": sum(codes.values()), "codes": codes,
            "delivered_ms": {"p50": pct(lat.get("delivered", []), 50), "p99": pct(lat.get("delivered", []), 99)},
            "all_ms": {"p50": pct(sum(lat.values(), []), 50), "p99": pct(sum(lat.values(), []), 99),
                       "max": pct(sum(lat.values(), []), 100)},
            "lateness_ms": {"p50": pct(late, 50), "p99": pct(late, 99)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="48,144")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--only", action="append", choices=["direct", "front"])
    a = ap.parse_args()
    only = a.only or ["direct", "front"]

    from surgesim.emulators import down, up
    from surgesim.emulators.front import Front, FrontSettings, serve
    from surgesim.services.common.devserver import free_port, start_service

    state = tempfile.mkdtemp(prefix="bench-live-")
    stack = up(["firestore"], project="surgesim-bench", state_dir=state)
    env = {**stack.env_vars(), "GOOGLE_CLOUD_PROJECT": "surgesim-bench", "LOG_LEVEL": "WARNING"}
    svc = start_service("surgesim.services.meridian.command:app", env, port=free_port(), log_dir=state)
    url = f"http://127.0.0.1:{svc.port}" if hasattr(svc, "port") else svc.url
    results = []
    try:
        for rate in [float(r) for r in a.rates.split(",")]:
            if "direct" in only:
                results.append({"path": "direct", **asyncio.run(offer(url, rate, a.seconds))})
                print(json.dumps(results[-1]), flush=True)
            if "front" in only:
                async def via_front() -> dict:
                    port = free_port()
                    f = Front("command", url, FrontSettings(min_instances=1), seed=1)
                    server = await serve(f, port)
                    try:
                        return await offer(f"http://127.0.0.1:{port}", rate, a.seconds)
                    finally:
                        server.should_exit = True
                        await server._surgesim_task  # noqa: SLF001

                results.append({"path": "front (same process)", **asyncio.run(via_front())})
                print(json.dumps(results[-1]), flush=True)
    finally:
        svc.proc.terminate() if hasattr(svc, "proc") else None
        try:
            svc.proc.wait(10)
        except Exception:  # noqa: BLE001
            pass
        down(state_dir=state)
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
