"""Overhead of the gRPC proxy: official-client publish and streaming-pull throughput through
the proxy vs straight to the emulator, interleaved in the same run.

    .venv/bin/python bench/bench_grpc_proxy.py --pubsub 127.0.0.1:8085 [--project P] [--n 4000] [--rounds 2]

The proxy runs in its own process (``python -m surgesim.emulators.grpc_proxy``), as it
would in front of a user's services; its CPU seconds per 1,000 messages are reported
from the child's CPU times. Each round measures both routes, in alternating order (fresh topic and
subscription names each time: the emulator slows down on recreated names). Prints one
JSON line per measurement and a summary line with medians and the proxied/direct ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

import grpc
import psutil
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

PAYLOAD = b"x" * 200
# Per round and route: publish n messages to a topic with two subscriptions, drain one with a
# single stream and the other with --streams streams.


def clients(endpoint: str):
    # What the official client builds from PUBSUB_EMULATOR_HOST: an insecure channel.
    pub = pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=grpc.insecure_channel(endpoint)))
    sub = pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(endpoint)))
    return pub, sub


def publish_rate(pub, topic_path: str, n: int) -> float:
    t0 = time.perf_counter()
    futures = [pub.publish(topic_path, PAYLOAD, i=str(i)) for i in range(n)]
    for f in futures:
        f.result(timeout=120)
    return n / (time.perf_counter() - t0)


def pull_rate(sub, sub_path: str, n: int, streams: int = 1, timeout: float = 120.0) -> float:
    """``streams`` streaming pulls on one subscription (one is the client's default; the
    emulator caps each stream at ~2k msg/s), ack in the callback: rate from subscribe to
    the n-th ack."""
    done, lock, count = threading.Event(), threading.Lock(), [0]

    def callback(message):
        message.ack()
        with lock:
            count[0] += 1
            if count[0] >= n:
                done.set()

    t0 = time.perf_counter()
    futures = [sub.subscribe(sub_path, callback, flow_control=pubsub_v1.types.FlowControl(max_messages=1000))
               for _ in range(streams)]
    finished = done.wait(timeout)
    elapsed = time.perf_counter() - t0
    for future in futures:
        future.cancel()
        try:
            future.result(timeout=10)
        except Exception:
            pass
    if not finished:
        raise RuntimeError(f"streaming pull got {count[0]}/{n} in {timeout}s")
    return n / elapsed


def trial(endpoint: str, project: str, n: int, streams: int = 4) -> dict:
    """Publish n messages to a topic with two subscriptions; drain one with a single
    stream and the other with ``streams`` streams."""
    pub, sub = clients(endpoint)
    tag = uuid.uuid4().hex[:8]
    tp = pub.topic_path(project, f"bench-proxy-{tag}")
    one, multi = (sub.subscription_path(project, f"bench-proxy-{tag}-{k}") for k in ("one", "multi"))
    pub.create_topic(name=tp)
    for sp in (one, multi):
        sub.create_subscription(request={"name": sp, "topic": tp, "ack_deadline_seconds": 60})
    try:
        publish = publish_rate(pub, tp, n)
        pull = pull_rate(sub, one, n)
        pull_multi = pull_rate(sub, multi, n, streams=streams)
    finally:
        for sp in (one, multi):
            sub.delete_subscription(subscription=sp)
        pub.delete_topic(topic=tp)
        sub.close()
        pub.transport.close()
    return {"publish_msg_s": publish, "pull_msg_s": pull, f"pull_{streams}_streams_msg_s": pull_multi}


def start_proxy(upstream: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "surgesim.emulators.grpc_proxy", "--upstream", upstream],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("PUBSUB_EMULATOR_HOST="):
        proc.kill()
        raise RuntimeError(f"proxy did not start: {line!r}")
    return proc, line.split("=", 1)[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pubsub", required=True, help="emulator host:port")
    ap.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT", "bench"))
    ap.add_argument("--n", type=int, default=4000, help="messages per measurement")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--streams", type=int, default=4, help="streams in the multi-stream pull measurement")
    args = ap.parse_args()
    proc, proxy = start_proxy(args.pubsub)
    child = psutil.Process(proc.pid)
    results: dict[str, list[dict]] = {"direct": [], "proxy": []}
    proxy_cpu = 0.0
    try:
        trial(args.pubsub, args.project, 200, args.streams)  # warm-up: JIT of the emulator, channels
        for r in range(args.rounds):
            order = [("direct", args.pubsub), ("proxy", proxy)]
            for via, endpoint in (order if r % 2 == 0 else order[::-1]):  # alternate: no order bias
                cpu0 = sum(child.cpu_times()[:2])
                out = trial(endpoint, args.project, args.n, args.streams)
                if via == "proxy":
                    proxy_cpu += sum(child.cpu_times()[:2]) - cpu0
                results[via].append(out)
                print(json.dumps({"round": r, "via": via, "n": args.n, **{k: round(v) for k, v in out.items()}}), flush=True)
    finally:
        proc.terminate()
        totals = json.loads(proc.communicate(timeout=30)[0].strip().splitlines()[-1])
    keys = list(results["direct"][0])
    med = {via: {k: statistics.median(x[k] for x in rows) for k in keys} for via, rows in results.items()}
    counted = {
        "published": sum(totals["topics"].values()),
        "acked": sum(s["acked"] for s in totals["subscriptions"].values()),
        "expected_published": args.n * args.rounds,
        "expected_acked": 2 * args.n * args.rounds,
    }
    print(json.dumps({
        "summary": {via: {k: round(v) for k, v in m.items()} for via, m in med.items()},
        "proxy_over_direct": {k: round(med["proxy"][k] / med["direct"][k], 2) for k in med["direct"]},
        # per 1,000 messages published once and delivered + acked on two subscriptions
        "proxy_cpu_s_per_1k_msgs": round(proxy_cpu / (args.n * args.rounds) * 1000, 3),
        "proxy_counted": counted,
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }), flush=True)


if __name__ == "__main__":
    main()
