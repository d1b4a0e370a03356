"""The issue's paths, harness against the raw emulator ceiling, measured in the same run.

    .venv/bin/python bench/bench_paths.py [--rounds 2] [--seconds 8] [--n 10000] [--json out.json]

Command accept (closed loop: the load generator is its own process, 32 keep-alive
connections, every request a new parcel so no transaction contends):

    raw      a one-write HTTP service (FastAPI + one async Firestore write, 202) on the
             Firestore emulator, uvicorn in its own process
    direct   the Meridian command service (one BatchGet of 2 documents, one commit of 2
             writes with preconditions), own process
    front    the same service behind its Cloud Run front (emulators/front.py), served from
             the harness's FrontSet loop in this process, as `surgesim live` serves it

Telemetry (publish -> consumer; the consumer is subscribed and idle first, then ``--n``
pings are published over REST in 1,000-message batches; rate = n / (last ack - first
publish)):

    raw            REST publish alone, and a bare streaming-pull subscriber (official
                   client, 1 stream, ack in the callback) in its own process
    livemap        the live-map service process (streaming pull, 1 stream) straight to
                   the emulator
    proxy          the same through the counting gRPC proxy (emulators/grpc_proxy.py)
    proxy+sampler  the same with the MetricsSampler's topic tap and ack ledger fed by the
                   proxy: the full harness (measurement overhead = 1 - this / proxy)

Every figure <= 20 s; 127.0.0.1 only; the stack, services and subprocesses are stopped
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from fastapi import FastAPI, Request  # module level: the handler's annotations are strings
from fastapi.responses import JSONResponse

HERE = os.path.abspath(__file__)
ROOT = Path(HERE).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
LIMIT_S = 20.0


# ---- subprocess roles --------------------------------------------------------------------------
def one_write_app():
    from google.cloud import firestore

    app = FastAPI()
    db = firestore.AsyncClient(project=os.environ["GOOGLE_CLOUD_PROJECT"])

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    @app.post("/{path:path}")
    async def write(path: str, request: Request):
        body = await request.json()
        await db.collection("raw_one_write").document(uuid.uuid4().hex).set(body)
        return JSONResponse({"accepted": True}, status_code=202)

    return app


def run_load(url: str, seconds: float, conns: int) -> None:
    """Closed loop: `conns` connections each POST create-shipment commands back to back."""
    from bench_live import RawClient, chain

    async def main():
        host, port = url.removeprefix("http://").split(":")
        client = RawClient(host, int(port), conns)
        codes: dict[int, int] = {}
        end = time.perf_counter() + seconds

        async def worker():
            while time.perf_counter() < end:
                path, body = chain(uuid.uuid4().hex[:16])[0]
                try:
                    code = await client.post(path, json.dumps(body).encode(),
                                             {"Content-Type": "application/json", "Authorization": "Bearer bench"})
                except Exception:  # noqa: BLE001
                    code = 0
                codes[code] = codes.get(code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conns)))
        d = time.perf_counter() - t0
        ok = sum(v for k, v in codes.items() if 200 <= k < 300)
        print(json.dumps({"requests": sum(codes.values()), "accepted": ok, "seconds": round(d, 2),
                          "accepted_per_s": round(ok / d, 1), "codes": {str(k): v for k, v in codes.items()}}))

    asyncio.run(main())


def run_raw_pull(subscription: str, n: int) -> None:
    """A bare streaming-pull subscriber: prints `ready`, then the time of the n-th ack."""
    from google.cloud import pubsub_v1

    sub = pubsub_v1.SubscriberClient()
    count, done = [0], threading.Event()
    lock = threading.Lock()

    def cb(m):
        m.ack()
        with lock:
            count[0] += 1
            if count[0] >= n:
                done.set()

    fut = sub.subscribe(subscription, cb, flow_control=pubsub_v1.types.FlowControl(max_messages=5000))
    print("ready", flush=True)
    done.wait(LIMIT_S + 30)
    print(json.dumps({"acked": count[0], "t_last": time.time()}), flush=True)
    fut.cancel()
    with contextlib.suppress(Exception):
        fut.result(5)
    sub.close()


# ---- helpers -------------------------------------------------------------------------------------
def emit(rec: dict, results: list) -> dict:
    results.append(rec)
    print(json.dumps(rec), flush=True)
    return rec


def load(url: str, seconds: float, conns: int) -> dict:
    out = subprocess.run([sys.executable, HERE, "--load", url, "--seconds", str(seconds), "--conns", str(conns)],
                         capture_output=True, text=True, timeout=seconds + 60, start_new_session=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


class Proc:
    """A subprocess in its own session, stopped with its group."""

    def __init__(self, args: list[str], env: dict, **kw) -> None:
        self.proc = subprocess.Popen(args, env=env, start_new_session=True, **kw)

    def stop(self) -> None:
        from surgesim.services.common.devserver import stop_group

        stop_group(self.proc, 10)


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1, trust_env=False).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def pings(start: int, k: int) -> list[dict]:
    from surgesim.emulators.pubsub_rest import b64

    return [{"data": b64(json.dumps({"vehicleId": f"v{i % 500}", "lat": 51.5, "lng": -0.1, "ts": f"{i:012d}"})),
             "attributes": {"vehicleId": f"v{i % 500}"}} for i in range(start, start + k)]


# ---- command accept ------------------------------------------------------------------------------
def command_path(stack, project, rounds, seconds, conns, results, state) -> None:
    from surgesim.emulators.front import FrontSettings
    from surgesim.live.fronts import FrontSet
    from surgesim.services.common.devserver import free_port, start_service

    env = {**os.environ, **stack.env_vars(), "GOOGLE_CLOUD_PROJECT": project, "LOG_LEVEL": "WARNING"}
    raw_port = free_port()
    raw = Proc([sys.executable, HERE, "--one-write", str(raw_port)], env)
    svc = start_service("surgesim.services.meridian.command:app", env, port=free_port(), log_dir=state)
    fronts = FrontSet()
    try:
        wait_http(f"http://127.0.0.1:{raw_port}/healthz")
        # warm and scaled: the front's own scaling is not what is measured here
        front_url = fronts.add("command", svc.url, FrontSettings(min_instances=2, max_instances=100, concurrency=80),
                               token="bench")
        for url in (f"http://127.0.0.1:{raw_port}", svc.url):  # warm-up: connections, the emulator's JIT
            load(url, 4, conns)
        for k in range(rounds):
            for name, url in (("raw_one_write_service", f"http://127.0.0.1:{raw_port}"),
                              ("command_direct", svc.url), ("command_via_front", front_url)):
                emit({"bench": name, "round": k, "conns": conns, **load(url, seconds, conns)}, results)
    finally:
        fronts.stop()
        svc.stop()
        raw.stop()


# ---- telemetry -----------------------------------------------------------------------------------
class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout=120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def publish_all(lt, rest, topic: str, n: int) -> tuple[float, float]:
    """(first publish wall time, publish seconds)."""
    async def go():
        t0, done = time.time(), 0
        while done < n:
            k = min(1000, n - done)
            await rest.publish(topic, pings(done, k))
            done += k
        return t0, time.time() - t0

    return lt.run(go())


def telemetry_path(stack, project, rounds, n, results, state) -> None:
    from surgesim.emulators.grpc_proxy import PubSubProxy, sampler_sink
    from surgesim.emulators.metrics import MetricsSampler
    from surgesim.services.common.devserver import free_port, start_service

    endpoint = stack.endpoint("pubsub")
    lt = LoopThread()
    rest = lt.run(_rest(endpoint, project))
    topic = f"telemetry-{uuid.uuid4().hex[:6]}"
    lt.run(rest.ensure_topic(topic))
    base_env = {**os.environ, **stack.env_vars(), "GOOGLE_CLOUD_PROJECT": project, "LOG_LEVEL": "WARNING",
                "DEBOUNCE_SECONDS": "1"}

    def new_sub() -> str:
        s = f"livemap-{uuid.uuid4().hex[:8]}"
        lt.run(rest.create_subscription(s, topic, ack_deadline=60))
        return s

    try:
        for k in range(rounds):
            # raw publish: to a topic of its own with one subscription, as the paths below
            t_raw = f"raw-{uuid.uuid4().hex[:6]}"
            lt.run(rest.ensure_topic(t_raw))
            lt.run(rest.create_subscription(t_raw + "-s", t_raw, ack_deadline=60))
            _, d = publish_all(lt, rest, t_raw, n)
            emit({"bench": "raw_rest_publish", "round": k, "messages": n, "msg_per_s": round(n / d)}, results)
            lt.run(rest.delete_subscription(t_raw + "-s"))

            # raw streaming pull
            s = new_sub()
            p = Proc([sys.executable, HERE, "--raw-pull", f"projects/{project}/subscriptions/{s}", "--n", str(n)],
                     base_env, stdout=subprocess.PIPE, text=True)
            try:
                assert p.proc.stdout.readline().strip() == "ready"
                time.sleep(1.0)  # the stream is open
                t0, _ = publish_all(lt, rest, topic, n)
                out = json.loads(p.proc.stdout.readline())
            finally:
                p.stop()
                lt.run(rest.delete_subscription(s))
            emit({"bench": "raw_streaming_pull", "round": k, "acked": out["acked"],
                  "msg_per_s": round(out["acked"] / (out["t_last"] - t0))}, results)

            for mode in ("livemap", "proxy", "proxy+sampler"):
                s = new_sub()
                proxy = sampler = None
                env = {**base_env, "SUBSCRIPTION": s}
                if mode != "livemap":
                    if mode == "proxy+sampler":
                        sampler = MetricsSampler(rest, [(s, topic, None)], interval=1.0, observed={s})
                        lt.run(sampler.provision())
                        sampler_task = asyncio.run_coroutine_threadsafe(sampler.run(), lt.loop)
                    proxy = PubSubProxy(endpoint, on_settled=sampler_sink(sampler, lt.loop) if sampler else None).start()
                    env.update(proxy.env_vars())
                svc = start_service("surgesim.services.meridian.livemap:app", env, port=free_port(), log_dir=state)
                try:
                    time.sleep(1.0)
                    t0, _ = publish_all(lt, rest, topic, n)
                    acked, t_last = 0, time.time()
                    while time.time() - t0 < LIMIT_S + 10:
                        if proxy is not None:
                            acked = proxy.acked(s)
                        else:
                            acked = httpx.get(svc.url + "/metrics", timeout=5, trust_env=False).json().get("received", 0)
                        t_last = time.time()
                        if acked >= n:
                            break
                        time.sleep(0.05)
                    rec = {"bench": f"telemetry_{mode.replace('+', '_')}", "round": k, "acked": acked,
                           "msg_per_s": round(acked / (t_last - t0))}
                    if sampler is not None:
                        lt.loop.call_soon_threadsafe(sampler.stop)
                        sampler_task.result(30)
                        rec["sampler_acked"] = sampler.totals()[s]["acked"]
                    emit(rec, results)
                finally:
                    svc.stop()
                    if proxy is not None:
                        proxy.stop()
                    lt.run(rest.delete_subscription(s))
    finally:
        lt.run(rest.aclose())
        lt.close()


async def _rest(endpoint, project):
    from surgesim.emulators.pubsub_rest import PubSubRest

    return PubSubRest(endpoint, project, max_connections=32)


def summary(results: list) -> dict:
    def fig(name, k, key):
        return next((r[key] for r in results if r["bench"] == name and r.get("round") == k), None)

    rounds = sorted({r["round"] for r in results if "round" in r})
    ratio = lambda a, b: round(a / b, 2) if a and b else None  # noqa: E731
    out = {"bench": "summary", "rounds": []}
    for k in rounds:
        raw_cmd = fig("raw_one_write_service", k, "accepted_per_s")
        raw_pull = fig("raw_streaming_pull", k, "msg_per_s")
        raw_pub = fig("raw_rest_publish", k, "msg_per_s")
        raw_tel = min(x for x in (raw_pull, raw_pub) if x) if raw_pull or raw_pub else None
        out["rounds"].append({
            "round": k,
            "command_front_vs_raw_one_write": ratio(fig("command_via_front", k, "accepted_per_s"), raw_cmd),
            "command_direct_vs_raw_one_write": ratio(fig("command_direct", k, "accepted_per_s"), raw_cmd),
            "front_vs_direct": ratio(fig("command_via_front", k, "accepted_per_s"), fig("command_direct", k, "accepted_per_s")),
            "telemetry_harness_vs_raw": ratio(fig("telemetry_proxy_sampler", k, "msg_per_s"), raw_tel),
            "telemetry_livemap_vs_raw": ratio(fig("telemetry_livemap", k, "msg_per_s"), raw_tel),
            "sampler_overhead": (round(1 - fig("telemetry_proxy_sampler", k, "msg_per_s")
                                       / fig("telemetry_proxy", k, "msg_per_s"), 3)
                                 if fig("telemetry_proxy", k, "msg_per_s") and fig("telemetry_proxy_sampler", k, "msg_per_s") else None),
            "proxy_and_sampler_overhead": (round(1 - fig("telemetry_proxy_sampler", k, "msg_per_s")
                                                 / fig("telemetry_livemap", k, "msg_per_s"), 3)
                                           if fig("telemetry_livemap", k, "msg_per_s") and fig("telemetry_proxy_sampler", k, "msg_per_s") else None),
        })
    return out


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one-write", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--load", help=argparse.SUPPRESS)
    ap.add_argument("--raw-pull", help=argparse.SUPPRESS)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of load per command figure")
    ap.add_argument("--n", type=int, default=10000, help="pings per telemetry figure")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="command,telemetry")
    ap.add_argument("--project", default="bench-paths")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.one_write:
        import uvicorn

        return uvicorn.run(one_write_app(), host="127.0.0.1", port=a.one_write, log_level="warning", access_log=False)
    if a.load:
        return run_load(a.load, a.seconds, a.conns)
    if a.raw_pull:
        return run_raw_pull(a.raw_pull, a.n)

    from surgesim.emulators import stack as st
    from surgesim.emulators.process import free_port

    results: list = []
    emit({"bench": "uptime_before", "uptime": uptime()}, results)
    state = tempfile.mkdtemp(prefix="bench-paths-")
    ports = {"pubsub": free_port(), "firestore": free_port(), "bigquery": free_port(), "bigquery_grpc": free_port()}
    t_start = time.time()
    try:
        stack = st.up(only="pubsub,firestore", ports=ports, project=a.project, state_dir=state)
        only = set(a.only.split(","))
        if "command" in only:
            command_path(stack, a.project, a.rounds, a.seconds, a.conns, results, state)
        if "telemetry" in only:
            telemetry_path(stack, a.project, a.rounds, a.n, results, state)
        emit(summary(results), results)
    finally:
        res = st.down(state_dir=state)
        if not res.ports_still_open:
            shutil.rmtree(state, ignore_errors=True)
        emit({"bench": "uptime_after", "uptime": uptime(), "total_seconds": round(time.time() - t_start, 1)}, results)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
