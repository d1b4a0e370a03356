"""Throughput of the bridges against the raw emulator ceiling, measured in the same run.

    .venv/bin/python bench/bench_bridges.py --pubsub 127.0.0.1:8085 --firestore 127.0.0.1:8086 [--n 10000]

Prints one JSON line per figure:
* raw: the emulator's REST pull(1000)+ack drain rate (the ceiling the bridges work under);
* push: the push bridge delivering to a trivial uvicorn endpoint (window capped at 1000);
* trigger: Firestore writes at a target rate for a few seconds through the trigger bridge:
  changes delivered and the write -> CloudEvent lag.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
import uuid

import httpx
import numpy as np

from surgesim.emulators.pubsub_rest import PubSubRest, b64
from surgesim.emulators.push import PushBridge, PushTarget


def start_sink():
    """A trivial ASGI endpoint in its own thread; counts requests and arrival times."""
    import uvicorn

    from surgesim.emulators.process import free_port

    seen: list[tuple[float, dict | None]] = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        seen.append((time.time(), json.loads(body) if body.startswith(b"{") and b'"value"' in body else None))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", seen, server


async def publish_n(rest, topic, n):
    for i in range(0, n, 1000):
        await rest.publish(topic, [{"data": b64("x" * 200), "attributes": {"i": str(j)}} for j in range(i, min(n, i + 1000))])


async def bench_raw(endpoint, project, n):
    rest = PubSubRest(endpoint, project)
    topic, sub = f"bench-raw-{uuid.uuid4().hex[:6]}", f"bench-raw-s-{uuid.uuid4().hex[:6]}"
    await rest.ensure_topic(topic)
    await rest.create_subscription(sub, topic, ack_deadline=60)
    await publish_n(rest, topic, n)
    t0, got = time.perf_counter(), 0
    while got < n:
        msgs = await rest.pull(sub, 1000)
        if msgs:
            await rest.ack(sub, [m["ackId"] for m in msgs])
            got += len(msgs)
    dt = time.perf_counter() - t0
    await rest.aclose()
    return {"bench": "raw_rest_pull_ack", "messages": n, "seconds": round(dt, 2), "msg_per_s": round(n / dt)}


async def bench_push(endpoint, project, n, url):
    rest = PubSubRest(endpoint, project)
    topic, sub = f"bench-push-{uuid.uuid4().hex[:6]}", f"bench-push-s-{uuid.uuid4().hex[:6]}"
    await rest.ensure_topic(topic)
    http = httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))
    bridge = PushBridge(rest, PushTarget(sub, topic, url, ack_deadline=60, max_window=1000, token="t"), http)
    await bridge.provision()
    await publish_n(rest, topic, n)
    task = asyncio.create_task(bridge.run())
    t0 = time.perf_counter()
    while bridge.counters.acked < n:
        await asyncio.sleep(0.05)
    dt = time.perf_counter() - t0
    bridge.stop()
    await task
    await http.aclose()
    await rest.aclose()
    lat = bridge.counters.latency
    return {"bench": "push_bridge", "messages": n, "seconds": round(dt, 2), "msg_per_s": round(n / dt),
            "final_window": bridge.counters.window, "push_latency_p50_ms": round(lat.percentile(50) * 1000, 1),
            "push_latency_p99_ms": round(lat.percentile(99) * 1000, 1)}


def bench_trigger(fs_endpoint, project, url, seen, rate, seconds, partitions):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    from surgesim.emulators.triggers import TriggerBridge

    os.environ["FIRESTORE_EMULATOR_HOST"] = fs_endpoint
    db = firestore.Client(project=project, credentials=AnonymousCredentials())
    collection = f"bench_{uuid.uuid4().hex[:6]}"
    bridge = TriggerBridge(db, collection=collection, url=url, project=project, partitions=partitions)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    ready = asyncio.Event()
    fut = asyncio.run_coroutine_threadsafe(bridge.run(ready), loop)
    while not ready.is_set():
        time.sleep(0.01)
    seen.clear()
    written: dict[str, float] = {}
    col = db.collection(collection)
    n = int(rate * seconds)
    t0 = time.time()
    from concurrent.futures import ThreadPoolExecutor

    def write(i):
        due = t0 + i / rate
        if (d := due - time.time()) > 0:
            time.sleep(d)
        doc = uuid.uuid4().hex[:12]
        written[doc] = time.time()
        col.document(doc).set({"i": i})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(n)))
    achieved = n / (time.time() - t0)
    deadline = time.time() + 60
    while len(seen) < n and time.time() < deadline:
        time.sleep(0.05)
    lags = [t - written[b["value"]["name"].rsplit("/", 1)[1]] for t, b in seen if b]
    bridge.stop()
    fut.result(30)
    loop.call_soon_threadsafe(loop.stop)
    return {"bench": "trigger_bridge", "partitions": partitions, "target_writes_per_s": rate,
            "achieved_writes_per_s": round(achieved), "changes": n, "delivered": len(lags),
            "lag_p50_ms": round(float(np.percentile(lags, 50)) * 1000) if lags else None,
            "lag_p99_ms": round(float(np.percentile(lags, 99)) * 1000) if lags else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pubsub", default=os.environ.get("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"))
    ap.add_argument("--firestore", default=os.environ.get("FIRESTORE_EMULATOR_HOST", "127.0.0.1:8086"))
    ap.add_argument("--project", default="bench-local")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--rates", default="50,200")
    ap.add_argument("--partitions", default="1,4")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    url, seen, server = start_sink()
    print(json.dumps(asyncio.run(bench_raw(args.pubsub, args.project, args.n))), flush=True)
    print(json.dumps(asyncio.run(bench_push(args.pubsub, args.project, args.n, url))), flush=True)
    for p in [int(x) for x in args.partitions.split(",")]:
        for r in [float(x) for x in args.rates.split(",")]:
            print(json.dumps(bench_trigger(args.firestore, args.project, url, seen, r, args.seconds, p)), flush=True)
    server.should_exit = True


if __name__ == "__main__":
    main()
