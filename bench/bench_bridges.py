"""Throughput of each bridge against the raw emulator ceiling, measured in the same run.

    .venv/bin/python bench/bench_bridges.py [--n 20000] [--rates 50,100,200,400,800] [--json out.json]

Starts its own private emulator stack (Pub/Sub, Firestore, BigQuery) on free ports in a
temporary state directory and stops it at the end. The HTTP endpoint the push and trigger
bridges deliver to is a trivial ASGI app (204 to every POST) served by uvicorn in its
*own process* (this file with ``--sink``), so the endpoint never shares the bridge's GIL.
Firestore writes for the trigger bridge come from another process too (``--writer``).

Prints one JSON line per figure and a summary with the ratio of each bridge to its raw
ceiling (the issue's target is >= 60%):

* raw ceilings: REST publish (1,000-message batches), REST ``pull(1000)`` + ack drain,
  gRPC ``pull(1000)`` + ack drain with the official client, Firestore single writes/s
  (1 and 8 threads), ``insert_rows_json`` of 20,000 rows into fresh tables in 500- and
  10,000-row batches (next to each BigQuery bridge figure), and POSTs to the sink with the
  bridges' own HTTP client (64 connections);
* push bridge: msgs/s delivered and acked at steady state, push window reached, latency;
  next to a bare relay of the same messages (gRPC pull 1,000, POST each, ack: the floor);
* filter relay: a filtered pull subscription (half the messages match) fed by the relay;
* BigQuery subscription bridge: rows/s into the BigQuery emulator;
* trigger bridge (each source: emulator, listen, poll): changes/s delivered exactly once and the write ->
  CloudEvent lag, at rising write rates until it falls behind (its ceiling), on a collection that already
  holds ``--trigger-preload`` documents (listeners pay for every one of them on each write).

Every measurement is bounded (<= 20 s); 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import httpx
import numpy as np

HERE = os.path.abspath(__file__)
PAYLOAD = "x" * 200
LIMIT_S = 20.0  # no single measurement runs longer


# ---- the sink: its own process -----------------------------------------------------------------
def sink_app():
    posts = 0
    trigger: list[tuple[float, str, str]] = []  # (arrival, document, updateTime)

    async def app(scope, receive, send):
        nonlocal posts, trigger
        if scope["type"] != "http":
            return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        path = scope["path"]
        if scope["method"] == "GET" and path in ("/healthz", "/stats"):
            out = b"ok" if path == "/healthz" else json.dumps({"posts": posts, "trigger": trigger}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": out})
            return
        if path == "/reset":
            posts, trigger = 0, []
        else:
            posts += 1
            doc = next((v for k, v in scope["headers"] if k == b"ce-document"), None)
            if doc is not None:
                trigger.append((time.time(), doc.decode(), json.loads(body)["value"]["updateTime"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def run_sink(port: int) -> None:
    import uvicorn

    uvicorn.run(sink_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Sink:
    """The sink process; stopped with its whole process group."""

    def __init__(self) -> None:
        from surgesim.emulators.process import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, HERE, "--sink", str(self.port)], start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1, trust_env=False).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the sink did not start")

    def stats(self) -> dict:
        return httpx.get(self.url + "/stats", timeout=30, trust_env=False).json()

    def reset(self) -> None:
        httpx.post(self.url + "/reset", timeout=10, trust_env=False)

    def stop(self) -> None:
        from surgesim.services.common.devserver import stop_group

        stop_group(self.proc, 10)


# ---- the Firestore writer: its own process ---------------------------------------------------
def run_writer(args) -> None:
    """Write ``rate``/s single documents for ``seconds`` (rate 0: as fast as possible)."""
    from concurrent.futures import ThreadPoolExecutor

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    db = firestore.Client(project=args.project, credentials=AnonymousCredentials())
    col = db.collection(args.collection)
    col.document("warmup").set({"i": -1}) if args.rate == 0 else None
    t0 = time.time()
    end = t0 + args.seconds
    count = [0] * args.threads

    def paced(k):
        i = k
        while True:
            due = t0 + i / args.rate
            if due >= end:
                return
            if (d := due - time.time()) > 0:
                time.sleep(d)
            col.document(uuid.uuid4().hex[:16]).set({"i": i})
            count[k] += 1
            i += args.threads

    def flat(k):
        while time.time() < end:
            col.document(uuid.uuid4().hex[:16]).set({"i": k})
            count[k] += 1

    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(paced if args.rate > 0 else flat, range(args.threads)))
    took = time.time() - t0
    print(json.dumps({"written": sum(count), "seconds": round(took, 2), "writes_per_s": round(sum(count) / took, 1)}))


def writer(fs_endpoint, project, collection, rate, seconds, threads=8) -> dict:
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": fs_endpoint}
    out = subprocess.run([sys.executable, HERE, "--writer", "--project", project, "--collection", collection,
                          "--rate", str(rate), "--seconds", str(seconds), "--threads", str(threads)],
                         env=env, capture_output=True, text=True, timeout=seconds + 60, start_new_session=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- helpers -------------------------------------------------------------------------------------
def emit(rec: dict, results: list) -> dict:
    results.append(rec)
    print(json.dumps(rec), flush=True)
    return rec


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def batch(start: int, size: int, attrs=None) -> list[dict]:
    from surgesim.emulators.pubsub_rest import b64

    return [{"data": b64(PAYLOAD), "attributes": attrs(i) if attrs else {"i": str(i)}} for i in range(start, start + size)]


async def publish(rest, topic, n, attrs=None, limit=LIMIT_S) -> tuple[int, float]:
    t0, done = time.perf_counter(), 0
    while done < n and time.perf_counter() - t0 < limit:
        k = min(1000, n - done)
        await rest.publish(topic, batch(done, k, attrs))
        done += k
    return done, time.perf_counter() - t0


class LoopThread:
    """One asyncio loop in a thread, where the bridges run (as `Bridges` runs them)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout=120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def steady_rate(samples: list[tuple[float, int]], n: int) -> float | None:
    """msgs/s between 10% and 90% of ``n`` (or the last sample): excludes slow-start and the tail."""
    lo = next(((t, a) for t, a in samples if a >= 0.1 * n), None)
    hi = next(((t, a) for t, a in samples if a >= 0.9 * n), samples[-1] if samples else None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        return None
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


# ---- raw ceilings --------------------------------------------------------------------------------
async def raw_pubsub(endpoint, project, clients, n, results):
    from surgesim.emulators.pubsub_rest import PubSubRest

    rest = PubSubRest(endpoint, project)
    topic, s_rest, s_grpc = fresh("raw"), fresh("raw-rest"), fresh("raw-grpc")
    await rest.ensure_topic(topic)
    await rest.create_subscription(s_rest, topic, ack_deadline=60)
    await rest.create_subscription(s_grpc, topic, ack_deadline=60)
    # Warm the emulator's JVM up first: right after start a REST drain ran ~5x slower than
    # the same work a minute later (JIT), which would understate every raw ceiling.
    warm, warm_sub = fresh("warm"), fresh("warm-s")
    await rest.ensure_topic(warm)
    await rest.create_subscription(warm_sub, warm, ack_deadline=60)
    await publish(rest, warm, 5000, limit=8)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 8:
        msgs = await rest.pull(warm_sub, 1000)
        if not msgs:
            break
        await rest.ack(warm_sub, [m["ackId"] for m in msgs])
    await rest.publish(topic, batch(0, 10))
    got, dt_ = await publish(rest, topic, n)
    emit({"bench": "raw_rest_publish", "messages": got, "seconds": round(dt_, 2), "msg_per_s": round(got / dt_),
          "note": "sequential 1000-message batches, 200-byte payload, 2 subscriptions on the topic"}, results)
    total = got + 10

    t0, drained = time.perf_counter(), 0
    while drained < total and time.perf_counter() - t0 < LIMIT_S:
        msgs = await rest.pull(s_rest, 1000)
        if msgs:
            await rest.ack(s_rest, [m["ackId"] for m in msgs])
            drained += len(msgs)
    d = time.perf_counter() - t0
    emit({"bench": "raw_rest_pull_ack", "messages": drained, "seconds": round(d, 2), "msg_per_s": round(drained / d)},
         results)
    await rest.aclose()

    sub = clients.subscriber()
    path = f"projects/{project}/subscriptions/{s_grpc}"
    t0, drained = time.perf_counter(), 0
    while drained < total and time.perf_counter() - t0 < LIMIT_S:
        resp = sub.pull(request={"subscription": path, "max_messages": 1000, "return_immediately": True}, timeout=30)
        ids = [m.ack_id for m in resp.received_messages]
        if ids:
            sub.acknowledge(request={"subscription": path, "ack_ids": ids}, timeout=30)
            drained += len(ids)
    d = time.perf_counter() - t0
    emit({"bench": "raw_grpc_pull_ack", "messages": drained, "seconds": round(d, 2), "msg_per_s": round(drained / d),
          "note": "official SubscriberClient.pull(max_messages=1000) + acknowledge"}, results)
    sub.close() if hasattr(sub, "close") else None


async def raw_sink(url, results, seconds=4.0, connections=64):
    """What plain POSTs from one event loop do to the sink (the push path's HTTP leg), with
    the client the bridges use (emulators/service_http.py), every connection busy."""
    from surgesim.emulators import service_http

    http = service_http.session(30.0)
    body = json.dumps({"message": {"data": PAYLOAD, "messageId": "1", "publishTime": "2020-01-01T00:00:00Z"},
                        "subscription": "s"}).encode()
    headers = {"authorization": "Bearer t", "content-type": "application/json"}
    done = 0
    end = time.perf_counter() + seconds

    async def worker():
        nonlocal done
        while time.perf_counter() < end:
            await service_http.post_status(http, url + "/push", body, headers)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(connections)])
    d = time.perf_counter() - t0
    await http.close()
    emit({"bench": "raw_http_post_to_sink", "requests": done, "seconds": round(d, 2), "req_per_s": round(done / d),
          "note": f"aiohttp (service_http.session), {connections} connections, all busy; sink = uvicorn, own process"},
         results)


def raw_bigquery(bq, table, results, seconds=4.0, size=500, total=None):
    """Sequential ``insert_rows_json`` of ``size``-row batches: for ``seconds``, or until
    ``total`` rows are in (into a fresh table, to compare with a bridge writing as many:
    the emulator copies the whole table into a snapshot on every insert, so the cost of an
    insert grows with the table)."""
    rows = [{"subscription_name": "s", "message_id": str(i), "publish_time": "2020-01-01T00:00:00Z",
             "data": PAYLOAD, "attributes": "{}"} for i in range(size)]
    t0, n = time.perf_counter(), 0
    while (n < total if total else time.perf_counter() - t0 < seconds) and time.perf_counter() - t0 < LIMIT_S:
        errors = bq.insert_rows_json(table, rows, retry=None, timeout=30)
        assert not errors, errors
        n += len(rows)
    d = time.perf_counter() - t0
    return emit({"bench": "raw_bigquery_insert_rows_json", "rows": n, "seconds": round(d, 2),
                 "rows_per_s": round(n / d), "batch": size, "fresh_table": bool(total),
                 "note": f"{size}-row batches, sequential"}, results)


def bq_table(bq, project, dataset, name) -> str:
    from google.cloud import bigquery

    schema = [bigquery.SchemaField(c, t) for c, t in (("subscription_name", "STRING"), ("message_id", "STRING"),
                                                      ("publish_time", "TIMESTAMP"), ("data", "STRING"),
                                                      ("attributes", "STRING"))]
    table = f"{project}.{dataset}.{name}"
    bq.create_table(bigquery.Table(table, schema=schema))
    return table


def raw_firestore(fs_endpoint, project, results, seconds=4.0):
    for threads in (1, 8):
        w = writer(fs_endpoint, project, fresh("rawfs"), 0, seconds, threads)
        emit({"bench": "raw_firestore_single_writes", "threads": threads, **w,
              "note": "document.set(), separate process"}, results)


def raw_push_relay(lt, endpoint, project, url, n, results):
    """The push path's floor, for the push bridge's ratio: pull 1,000 over gRPC, POST each
    one's push envelope to the sink (all at once, the bridges' HTTP client), ack them, again;
    no push window, no backoff, no measurement. The bridge's own work on top of this is
    what the ratio shows."""
    from surgesim.emulators import service_http
    from surgesim.emulators.pubsub_grpc import PubSubGrpc, as_rest
    from surgesim.emulators.pubsub_rest import PubSubRest
    from surgesim.emulators.push import build_envelope

    async def go():
        rest, grpc_client, http = PubSubRest(endpoint, project), PubSubGrpc(endpoint, project), service_http.session(30.0)
        topic, sub = fresh("rawpush"), fresh("rawpush-s")
        await rest.ensure_topic(topic)
        await rest.create_subscription(sub, topic, ack_deadline=60)
        got, _ = await publish(rest, topic, n)
        path = rest.subscription_path(sub)
        headers = {"authorization": "Bearer t", "content-type": "application/json"}
        done, t0 = 0, time.perf_counter()
        while done < got and time.perf_counter() - t0 < LIMIT_S:
            received = [as_rest(r) for r in await grpc_client.pull(sub, 1000)]
            await asyncio.gather(*(service_http.post_status(http, url + "/push",
                                                            json.dumps(build_envelope(r, path)).encode(), headers)
                                   for r in received))
            await grpc_client.ack(sub, [r["ackId"] for r in received])
            done += len(received)
        d = time.perf_counter() - t0
        await http.close()
        await grpc_client.aclose()
        await rest.aclose()
        return done, d

    done, d = lt.run(go(), timeout=LIMIT_S + 60)
    return emit({"bench": "raw_push_relay", "messages": done, "seconds": round(d, 2), "msg_per_s": round(done / d),
                 "note": "gRPC pull(1000) -> POST each envelope (all at once) -> ack, one loop; sink = uvicorn"},
                results)


# ---- bridges -------------------------------------------------------------------------------------
def bench_push(lt, endpoint, project, url, n, results, limit=LIMIT_S):
    from surgesim.emulators import service_http
    from surgesim.emulators.pubsub_rest import PubSubRest
    from surgesim.emulators.push import PushBridge, PushTarget

    async def setup():
        rest = PubSubRest(endpoint, project, max_connections=128)
        http = service_http.session(30.0)
        topic = fresh("push")
        await rest.ensure_topic(topic)
        bridge = PushBridge(rest, PushTarget(fresh("push-s"), topic, url + "/push", ack_deadline=60, max_window=1000,
                                             token="t"), http)
        await bridge.provision()
        got, _ = await publish(rest, topic, n)
        return rest, http, bridge, got

    rest, http, bridge, got = lt.run(setup())
    task = lt.spawn(bridge.run())
    samples = []
    t0 = time.perf_counter()
    max_window = 0
    while bridge.counters.acked < got and time.perf_counter() - t0 < limit:
        time.sleep(0.2)
        samples.append((time.perf_counter() - t0, bridge.counters.acked))
        max_window = max(max_window, bridge.counters.window)
    d = time.perf_counter() - t0
    lt.loop.call_soon_threadsafe(bridge.stop)
    task.result(30)
    lt.run(http.close())
    lt.run(rest.aclose())
    lat = bridge.counters.latency
    c = bridge.counters
    rate = steady_rate(samples, got)
    return emit({"bench": "push_bridge", "backlog": got, "acked": c.acked, "nacked": c.nacked, "seconds": round(d, 2),
                 "msg_per_s_overall": round(c.acked / d), "msg_per_s_steady": round(rate) if rate else None,
                 "window_reached": max_window, "window_max": 1000,
                 "push_latency_p50_ms": round(lat.percentile(50) * 1000, 1),
                 "push_latency_p99_ms": round(lat.percentile(99) * 1000, 1)}, results)


def bench_relay(lt, endpoint, project, n, results):
    from surgesim.emulators.filtering import FilterRelay
    from surgesim.emulators.pubsub_rest import PubSubRest

    async def setup():
        rest = PubSubRest(endpoint, project, max_connections=128)
        topic = fresh("relay")
        relay = FilterRelay(rest, fresh("relay-s"), topic, 'attributes.keep = "1"', ack_deadline=60)
        await relay.provision()
        got, _ = await publish(rest, topic, n, attrs=lambda i: {"i": str(i), "keep": str(i % 2)})
        return rest, relay, got

    rest, relay, got = lt.run(setup())
    task = lt.spawn(relay.run())
    samples = []
    t0 = time.perf_counter()
    while relay.counters.seen < got and time.perf_counter() - t0 < LIMIT_S:
        time.sleep(0.1)
        samples.append((time.perf_counter() - t0, relay.counters.seen))
    d = time.perf_counter() - t0
    lt.loop.call_soon_threadsafe(relay.stop)
    task.result(30)

    async def drain():  # what the user's subscription holds: exactly the matching half?
        seen, t = 0, time.perf_counter()
        while time.perf_counter() - t < 10:
            msgs = await rest.pull(relay.subscription, 1000)
            if not msgs:
                if seen >= relay.counters.relayed:
                    break
                await asyncio.sleep(0.05)
                continue
            seen += len(msgs)
            await rest.ack(relay.subscription, [m["ackId"] for m in msgs])
        return seen

    in_sub = lt.run(drain())
    lt.run(rest.aclose())
    c = relay.counters
    rate = steady_rate(samples, got)
    return emit({"bench": "filter_relay", "published": got, "seen": c.seen, "relayed": c.relayed,
                 "filtered": c.filtered, "in_user_subscription": in_sub, "seconds": round(d, 2),
                 "msg_per_s_overall": round(c.seen / d), "msg_per_s_steady": round(rate) if rate else None,
                 "note": "messages of the topic processed per second (pull tap + republish matches + ack)"}, results)


def bench_bq(lt, endpoint, project, bq, table, n, results, workers=None, batch=None):
    from surgesim.emulators.bq_subscription import BigQuerySubscriptionBridge
    from surgesim.emulators.pubsub_rest import PubSubRest

    async def setup():
        rest = PubSubRest(endpoint, project, max_connections=128)
        topic = fresh("bq")
        kw = {k: v for k, v in (("workers", workers), ("batch", batch)) if v is not None}
        bridge = BigQuerySubscriptionBridge(rest, bq, subscription=fresh("bq-s"), topic=topic, table=table, **kw)
        await bridge.provision()
        got, _ = await publish(rest, topic, n)
        return rest, bridge, got

    rest, bridge, got = lt.run(setup())
    task = lt.spawn(bridge.run())
    samples = []
    t0 = time.perf_counter()
    while bridge.counters.rows < got and time.perf_counter() - t0 < LIMIT_S:
        time.sleep(0.1)
        samples.append((time.perf_counter() - t0, bridge.counters.rows))
    d = time.perf_counter() - t0
    lt.loop.call_soon_threadsafe(bridge.stop)
    task.result(60)
    lt.run(rest.aclose())
    counted = list(bq.query(f"SELECT COUNT(*) AS n FROM `{table}`").result())[0]["n"]
    c = bridge.counters
    rate = steady_rate(samples, got)
    return emit({"bench": "bigquery_subscription_bridge", "published": got, "rows": c.rows, "rows_in_table": counted,
                 "failed_batches": c.failed_batches, "batch": bridge.batch, "workers": bridge.workers,
                 "inserts": c.batches, "rows_per_insert": round(c.rows / c.batches) if c.batches else None, "seconds": round(d, 2),
                 "rows_per_s_overall": round(c.rows / d), "rows_per_s_steady": round(rate) if rate else None}, results)


def _lag_s(arrival: float, update_time: str) -> float:
    return arrival - dt.datetime.fromisoformat(update_time.replace("Z", "+00:00")).timestamp()


def raw_trigger(lt, hook, fs_endpoint, project, results, seconds=4.0):
    """The trigger path's raw ceiling: the Firestore emulator's own event posts, counted by
    the run's hook and nothing else (no bridge, no onward POST), while 8 writer threads
    write as fast as they go. events/s = events / (first write -> last event)."""
    from surgesim.emulators import service_http
    from surgesim.emulators.triggers import DISABLED_PATTERN, register_trigger

    collection = fresh("rawtrig").replace("-", "_")
    trigger_id = "bench-" + collection.replace("_", "-")
    arrived: list[float] = []

    async def register(pattern):
        async with service_http.session(30.0) as http:
            await register_trigger(http, fs_endpoint, project, trigger_id, pattern)

    hook.handlers[trigger_id] = lambda body: arrived.append(time.time())
    lt.run(register(f"{collection}/{{id}}"))
    try:
        t0 = time.time()
        w = writer(fs_endpoint, project, collection, 0, seconds)
        while len(arrived) < w["written"] and time.time() < t0 + seconds + 10:
            time.sleep(0.05)
    finally:
        lt.run(register(DISABLED_PATTERN))
        hook.handlers.pop(trigger_id, None)
    n = len(arrived)
    d = (arrived[-1] - t0) if arrived else float("nan")
    return emit({"bench": "raw_trigger_events", "writes": w["written"], "writes_per_s": w["writes_per_s"],
                 "events": n, "events_per_s": round(n / d, 1) if n else 0,
                 "note": "the Firestore emulator's posts to a hook that only counts them; 8 writer threads"}, results)


def bench_trigger(lt, db, fs_endpoint, project, sink, rate, seconds, partitions, results, source="listen", hook=None,
                  preload=0):
    from surgesim.emulators.triggers import TriggerBridge

    collection = fresh("trig").replace("-", "_")
    kw = {"partitions": partitions} if partitions else {}
    kw["source"] = source
    for i in range(0, preload, 500):  # documents already there: the baseline, no events
        batch = db.batch()
        for j in range(i, min(preload, i + 500)):
            batch.set(db.collection(collection).document(f"pre{j:06d}"), {"status": "stock", "n": j})
        batch.commit()
    bridge = TriggerBridge(db, collection=collection, url=sink.url + "/", project=project, hook=hook, **kw)
    ready = asyncio.Event()
    task = lt.spawn(bridge.run(ready))
    deadline = time.time() + 30
    while not ready.is_set() and time.time() < deadline:
        time.sleep(0.02)
    sink.reset()
    w = writer(fs_endpoint, project, collection, rate, seconds)
    n = w["written"]
    wrote_end = time.time()
    # kept up: every change delivered within 2 s of the last write; otherwise wait (bounded) to count it
    delivered, stats = 0, {}
    while time.time() < wrote_end + 8:
        stats = sink.stats()
        delivered = len({d for _, d, _ in stats["trigger"]})
        if delivered >= n:
            break
        time.sleep(0.25)
    caught_up_s = time.time() - wrote_end
    lt.loop.call_soon_threadsafe(bridge.stop)
    with contextlib.suppress(Exception):
        task.result(15)
    stats = sink.stats()
    docs = [d for _, d, _ in stats["trigger"]]
    lags = [_lag_s(a, u) for a, _, u in stats["trigger"]]
    distinct = len(set(docs))
    kept_up = distinct >= n and caught_up_s <= 2.0
    return emit({"bench": "trigger_bridge", "source": source, "partitions": bridge.partitions, "preload": preload,
                 "polls": bridge.counters.polls, "poll_seconds": round(bridge.counters.poll_seconds, 2), "target_writes_per_s": rate,
                 "achieved_writes_per_s": w["writes_per_s"], "changes": n, "delivered_distinct": distinct,
                 "duplicates": len(docs) - distinct, "delivered_per_s": round(distinct / w["seconds"], 1),
                 "caught_up_after_last_write_s": round(caught_up_s, 2), "kept_up": kept_up,
                 "lag_p50_ms": round(float(np.percentile(lags, 50)) * 1000) if lags else None,
                 "lag_p99_ms": round(float(np.percentile(lags, 99)) * 1000) if lags else None}, results)


# ---- main ----------------------------------------------------------------------------------------
def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def summary(results: list) -> dict:
    by = {}
    for r in results:
        by.setdefault(r["bench"], []).append(r)
    g = lambda name, key: by[name][0][key] if name in by and by[name][0].get(key) is not None else None  # noqa: E731
    raw_rest, raw_grpc = g("raw_rest_pull_ack", "msg_per_s"), g("raw_grpc_pull_ack", "msg_per_s")
    # the best raw insert of the run, whatever its batch size: the strictest ceiling
    raw_bq = max((r["rows_per_s"] for r in by.get("raw_bigquery_insert_rows_json", [])), default=None)
    fs8 = next((r["writes_per_s"] for r in by.get("raw_firestore_single_writes", []) if r["threads"] == 8), None)
    trig = [r for r in by.get("trigger_bridge", []) if r["kept_up"] and r.get("source") == "listen"]
    trig_poll = [r for r in by.get("trigger_bridge", []) if r["kept_up"] and r.get("source") == "poll"]
    trig_emu = [r for r in by.get("trigger_bridge", []) if r["kept_up"] and r.get("source") == "emulator"]
    trig_ceiling = max((r["achieved_writes_per_s"] for r in trig), default=None)
    raw_events = g("raw_trigger_events", "events_per_s")
    ratio = lambda a, b: round(a / b, 2) if a and b else None  # noqa: E731
    push = g("push_bridge", "msg_per_s_steady") or g("push_bridge", "msg_per_s_overall")
    relay = g("filter_relay", "msg_per_s_steady") or g("filter_relay", "msg_per_s_overall")
    # BigQuery: each round's bridge against the best raw insert of the same round (fresh tables)
    raws = [r for r in by.get("raw_bigquery_insert_rows_json", []) if r.get("fresh_table")]
    bridges_ = [r for r in by.get("bigquery_subscription_bridge", []) if r["workers"] != 1]
    per_round = [round(b["rows_per_s_overall"] / max(r["rows_per_s"] for r in raws[2 * k:2 * k + 2]), 2)
                 for k, b in enumerate(bridges_) if raws[2 * k:2 * k + 2]]
    bqb = g("bigquery_subscription_bridge", "rows_per_s_steady") or g("bigquery_subscription_bridge", "rows_per_s_overall")
    return {"bench": "summary",
            "push_vs_raw_rest_pull_ack": ratio(push, raw_rest),
            "push_vs_raw_http_post": ratio(push, g("raw_http_post_to_sink", "req_per_s")),
            "push_vs_raw_push_relay": ratio(push, g("raw_push_relay", "msg_per_s")),
            "relay_vs_raw_rest_pull_ack": ratio(relay, raw_rest),
            "bq_vs_raw_insert": ratio(bqb, raw_bq),
            "bq_vs_best_raw_insert_per_round": per_round,
            "bq_vs_min_raw": ratio(bqb, min(x for x in (raw_bq, raw_rest) if x) if raw_bq or raw_rest else None),
            "trigger_ceiling_writes_per_s": trig_ceiling,
            "trigger_poll_ceiling_writes_per_s": max((r["achieved_writes_per_s"] for r in trig_poll), default=None),
            "trigger_emulator_ceiling_writes_per_s": max((r["achieved_writes_per_s"] for r in trig_emu), default=None),
            "trigger_vs_raw_firestore_8_threads": ratio(trig_ceiling, fs8),
            "trigger_emulator_vs_raw_firestore_8_threads": ratio(max((r["achieved_writes_per_s"] for r in trig_emu),
                                                                     default=None), fs8),
            "trigger_emulator_vs_raw_trigger_events": ratio(max((r["achieved_writes_per_s"] for r in trig_emu),
                                                                default=None), raw_events),
            "raw_grpc_vs_rest_pull_ack": ratio(raw_grpc, raw_rest)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--collection", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds of writes per trigger step")
    ap.add_argument("--project", default="bench-local")
    ap.add_argument("--n", type=int, default=20000, help="messages per Pub/Sub measurement")
    ap.add_argument("--rates", default="20,40,160,320,640", help="trigger write rates, rising; stops when behind")
    ap.add_argument("--trigger-source", default="emulator,listen,poll", help="trigger bridge sources to measure")
    ap.add_argument("--trigger-preload", type=int, default=1000,
                    help="documents in the trigger's collection before it starts (dispatch_wave's stock: ~900)")
    ap.add_argument("--partitions", type=int, default=None, help="trigger bridge key ranges (default: the bridge's)")
    ap.add_argument("--only", default="raw,push,relay,bq,trigger")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of the interleaved raw/bridge figures")
    ap.add_argument("--json", help="also write every record to this file")
    args = ap.parse_args()
    if args.sink:
        return run_sink(args.sink)
    if args.writer:
        return run_writer(args)

    from surgesim.emulators import stack as st
    from surgesim.emulators.process import free_port

    only = set(args.only.split(","))
    results: list = []
    emit({"bench": "uptime_before", "uptime": uptime()}, results)
    state_dir = tempfile.mkdtemp(prefix="bench-bridges-")
    ports = {"pubsub": free_port(), "firestore": free_port(), "firestore_events": free_port(), "bigquery": free_port(),
             "bigquery_grpc": free_port()}
    sink = lt = None
    t_start = time.time()
    try:
        t0 = time.time()
        stack = st.up(only="pubsub,firestore,bigquery", ports=ports, project=args.project, state_dir=state_dir)
        emit({"bench": "stack_up", "seconds": round(time.time() - t0, 1), "ports": ports}, results)
        ps, fs = stack.endpoint("pubsub"), stack.endpoint("firestore")
        sink = Sink()
        lt = LoopThread()
        if "raw" in only:
            asyncio.run(raw_pubsub(ps, args.project, stack.clients, args.n, results))
            asyncio.run(raw_sink(sink.url, results))
            if "trigger" not in only:
                raw_firestore(fs, args.project, results)
        bq = None
        if "bq" in only or "raw" in only:
            bq = stack.clients.bigquery()
            ds = fresh("bench").replace("-", "_")
            bq.create_dataset(ds)
            if "raw" in only and "bq" not in only:
                raw_bigquery(bq, bq_table(bq, args.project, ds, "raw"), results)
        if "bq" in only:
            # Each figure writes the same number of rows into a fresh table (insert cost grows
            # with the table); raw and bridge interleaved, so load swings hit both.
            n = min(args.n, 20000)
            for k in range(args.repeat):
                raw_bigquery(bq, bq_table(bq, args.project, ds, f"raw500_{k}"), results, size=500, total=n)
                raw_bigquery(bq, bq_table(bq, args.project, ds, f"raw10k_{k}"), results, size=10000, total=n)
                bench_bq(lt, ps, args.project, bq, bq_table(bq, args.project, ds, f"bridge_{k}"), n, results)
            bench_bq(lt, ps, args.project, bq, bq_table(bq, args.project, ds, "bridge_w1"), n, results, workers=1)
        if "push" in only:
            raw_push_relay(lt, ps, args.project, sink.url, args.n, results)
            bench_push(lt, ps, args.project, sink.url, args.n, results)
        if "relay" in only:
            bench_relay(lt, ps, args.project, args.n, results)
        if "trigger" in only:
            from surgesim.emulators.triggers import TriggerHook

            db = stack.clients.firestore()
            hook = TriggerHook(stack.ports("firestore")["firestore_events"])  # where the emulator posts writes
            lt.run(hook.start())
            for k in range(args.repeat):  # raw writes right before the steps, so load swings hit both
                raw_firestore(fs, args.project, results)
                if "emulator" in args.trigger_source.split(","):
                    raw_trigger(lt, hook, fs, args.project, results)
                for source in args.trigger_source.split(","):
                    for rate in [float(x) for x in args.rates.split(",")]:
                        r = bench_trigger(lt, db, fs, args.project, sink, rate, args.seconds, args.partitions,
                                          results, source, hook=hook if source == "emulator" else None,
                                          preload=args.trigger_preload)
                        if not r["kept_up"]:
                            break
            lt.run(hook.close())
        emit(summary(results), results)
    finally:
        if lt is not None:
            lt.close()
        if sink is not None:
            sink.stop()
        res = st.down(state_dir=state_dir)
        if not res.ports_still_open:
            import shutil

            shutil.rmtree(state_dir, ignore_errors=True)  # logs and emulator data: nothing left behind
        emit({"bench": "stack_down", "messages": res.messages, "ports_still_open": res.ports_still_open}, results)
        emit({"bench": "uptime_after", "uptime": uptime(), "total_seconds": round(time.time() - t_start, 1)}, results)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
