"""How fast can the load generators send on this machine? (docs/benchmarks/loadgen.md)

For each path, an open-model schedule is offered at increasing rates for a few seconds
each, through the real generator code (run_locust / run_fleet); the achieved rate is
answered sends / the offered window, and a rate counts as sustained when every scheduled
send was answered and the generator's lateness p99 stayed under 1 s.

    telemetry  REST publish to the real Pub/Sub emulator (batches of up to 1,000):
               Locust (gevent, geventhttpclient) vs the asyncio fleet driver (httpx)
    http       POSTs to a trivial FastAPI/uvicorn server (1 worker, its own process):
               Locust vs the asyncio driver
    scheduler  pure scheduling lateness, no I/O: asyncio sleep-until loop vs
               simpy.rt.RealtimeEnvironment (factor = 1/time_scale)

    .venv/bin/python bench/bench_loadgen.py                 # everything (~3 min)
    .venv/bin/python bench/bench_loadgen.py --only http --rates 200,500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SYSTEM = """\
name: bench
project: surgesim-bench
topics:
  - {name: bench.telemetry}
services:
  - name: api
    routes:
      - {name: hit, path: /hit}
"""

PUBLISH_SCENARIO = """\
name: bench_publish
system: system.yaml
duration: 600s
traffic:
  sources:
    - {name: pings, kind: fleet, vehicles: %(vehicles)d, ping_interval: 1s, publish: {topic: bench.telemetry}}
live: {time_scale: 1, rate_scale: 1}
"""

HTTP_SCENARIO = """\
name: bench_http
system: system.yaml
duration: 600s
traffic:
  sources:
    - {name: steady, rate: %(rate)d/s, request: {service: api, route: hit}}
live: {time_scale: 1, rate_scale: 1}
"""


def scenario(tmp: Path, text: str, **kw) -> Path:
    (tmp / "system.yaml").write_text(SYSTEM)
    path = tmp / f"s-{len(list(tmp.iterdir()))}.yaml"
    path.write_text(text % kw)
    return path


def verdict(result, source: str, seconds: float) -> dict:
    c = result.counts[source]
    late = result.lateness
    ok = c.get("ok", 0)
    return {"scheduled": c["scheduled"], "ok": ok, "achieved_per_s": round(ok / seconds, 1),
            "lateness_p99_s": round(late.get("p99", float("nan")), 3),
            "sustained": ok == c["scheduled"] and late.get("p99", 99) < 1.0}


def bench_generator(kind: str, generator: str, rates: list[int], seconds: float, endpoints: dict, tmp: Path,
                    concurrency: int = 32) -> list:
    from surgesim.loadtests.fleet_driver import run_fleet
    from surgesim.loadtests.runner import run_locust

    rows = []
    for rate in rates:
        if kind == "telemetry":
            path, source = scenario(tmp, PUBLISH_SCENARIO, vehicles=rate), "pings"
        else:
            path, source = scenario(tmp, HTTP_SCENARIO, rate=rate), "steady"
        out = tmp / f"{kind}-{generator}-{rate}"
        if generator == "locust":
            result = run_locust(path, endpoints, seconds, out, env={"SURGESIM_MAX_USERS": "200",
                                                                   "SURGESIM_USER_WINDOW_S": "0.1"})
        else:
            result = run_fleet(path, endpoints, seconds, out, concurrency=concurrency, drain_s=10.0)
        row = {"path": kind, "generator": generator, "offered_per_s": rate, **verdict(result, source, seconds)}
        if generator == "fleet_driver":
            row["concurrency"] = concurrency
        print(json.dumps(row), flush=True)
        rows.append(row)
        if not row["sustained"]:
            break
    return rows


def bench_scheduler(rate: float, seconds: float) -> list[dict]:
    """Lateness of bare scheduled callbacks (no I/O) at `rate` per second."""
    import simpy.rt

    rng = np.random.default_rng(1)
    times = np.cumsum(rng.exponential(1.0 / rate, int(rate * seconds * 1.2)))
    times = times[times < seconds]
    out = []

    async def asyncio_loop() -> np.ndarray:
        late = np.empty(len(times))
        t0 = time.time()
        i = 0
        while i < len(times):
            delay = t0 + times[i] - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time() - t0
            while i < len(times) and times[i] <= now:  # everything due, as the driver does
                late[i] = now - times[i]
                i += 1
        return late

    late = asyncio.run(asyncio_loop())
    out.append({"path": "scheduler", "generator": "asyncio", "offered_per_s": rate, "events": len(times),
                "lateness_p50_ms": round(1e3 * float(np.median(late)), 2),
                "lateness_p99_ms": round(1e3 * float(np.percentile(late, 99)), 2)})

    env = simpy.rt.RealtimeEnvironment(factor=1.0, strict=False)
    late_rt = np.empty(len(times))
    t0 = time.time()

    def proc(env):
        prev = 0.0
        for i, t in enumerate(times):
            yield env.timeout(t - prev)
            prev = t
            late_rt[i] = (time.time() - t0) - t

    env.process(proc(env))
    env.run()
    out.append({"path": "scheduler", "generator": "simpy.rt", "offered_per_s": rate, "events": len(times),
                "lateness_p50_ms": round(1e3 * float(np.median(late_rt)), 2),
                "lateness_p99_ms": round(1e3 * float(np.percentile(late_rt, 99)), 2)})
    for row in out:
        print(json.dumps(row), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["telemetry", "http", "scheduler"], action="append")
    ap.add_argument("--seconds", type=float, default=6.0, help="offered window per rate (wall seconds)")
    ap.add_argument("--rates", default=None, help="comma-separated offered rates (per path default otherwise)")
    ap.add_argument("--generator", choices=["locust", "fleet_driver"], action="append")
    ap.add_argument("--driver-concurrency", type=int, default=32, help="the fleet driver's connection limit")
    ap.add_argument("--json", default=None, help="write all rows to this file")
    a = ap.parse_args()
    only = a.only or ["scheduler", "http", "telemetry"]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as d:
        tmp = Path(d)
        if "scheduler" in only:
            for rate in [int(r) for r in (a.rates or "1000,10000").split(",")]:
                rows += bench_scheduler(rate, a.seconds)
        if "http" in only:
            from surgesim.loadtests.target import free_port

            port = free_port()
            app_dir = tmp / "app"
            app_dir.mkdir()
            (app_dir / "bench_target.py").write_text("from surgesim.loadtests.target import build_app\napp = build_app()\n")
            server = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench_target:app", "--port", str(port),
                                       "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"],
                                      cwd=app_dir, start_new_session=True)
            try:
                import httpx

                for _ in range(100):
                    try:
                        httpx.get(f"http://127.0.0.1:{port}/up", trust_env=False)
                        break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                endpoints = {"api": f"http://127.0.0.1:{port}", "project": "p"}
                rates = [int(r) for r in (a.rates or "200,500,1000,2000").split(",")]
                for gen in a.generator or ("locust", "fleet_driver"):
                    rows += bench_generator("http", gen, rates, a.seconds, endpoints, tmp, a.driver_concurrency)
            finally:
                server.terminate()
                server.wait(10)
        if "telemetry" in only:
            from surgesim.emulators import down, up
            from surgesim.emulators.process import free_port as fp

            state = tmp / "emu"
            stack = up("pubsub", ports={"pubsub": fp()}, project="surgesim-bench", state_dir=state)
            try:
                host = stack.env_vars()["PUBSUB_EMULATOR_HOST"]
                pub = stack.clients.publisher()
                pub.create_topic(name=pub.topic_path("surgesim-bench", "bench.telemetry"))
                endpoints = {"pubsub": host, "project": "surgesim-bench"}
                rates = [int(r) for r in (a.rates or "2000,5000,10000,20000").split(",")]
                for gen in a.generator or ("locust", "fleet_driver"):
                    rows += bench_generator("telemetry", gen, rates, a.seconds, endpoints, tmp, a.driver_concurrency)
            finally:
                down(state_dir=state)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
