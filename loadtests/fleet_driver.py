"""The simulated fleet, driving the real services in wall-clock time (no gevent, no Locust).

The same traffic model as the simulator (plan.py: the scenario's NHPP, compressed by
time_scale, thinned by rate_scale), the same vehicles (sim/fleet.py: pings are real
positions on delivery loops), each templated source's rendered payload (items taken from and
put into pools), and each flow's steps. Each arrival is sent for
real: telemetry over the Pub/Sub emulator's REST publish (batched when several are due),
requests over HTTP (httpx), each stamped with its intended send time.

An asyncio loop is the scheduler: it sleeps until the next intended time, hands every due
send to a task and goes back to the schedule, so a slow server never delays later sends
(open model); the connection limit (`concurrency`) is where a slow server makes sends queue,
and that queueing is measured because latency counts from the intended time. Telemetry
goes to a few publish workers per topic (`publishers`), each taking everything queued (up
to 1,000 messages) per request, so batches grow with the publish latency.

    python -m surgesim.loadtests.fleet_driver --duration 20 --out runs/x/fleet
    (endpoints from COMMAND_URL, APP_URL, PUBSUB_EMULATOR_HOST, GOOGLE_CLOUD_PROJECT)
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from surgesim.loadtests.actions import (MAX_PUBLISH_BATCH, FlowRun, Payloads, Send, count_flow, load_prepared, publish_body,
                                        publish_url)
from surgesim.loadtests.plan import PROJECT, PUBSUB, LivePlan, endpoints_from_env, missing_endpoints
from surgesim.loadtests.prepare import exchange, run_prepare
from surgesim.loadtests.recorder import LoadResult, Recorder

GENERATOR = "fleet_driver"
DriverResult = LoadResult


class FleetDriver:
    def __init__(self, plan: LivePlan, endpoints: dict[str, str], *, concurrency: int = 64, publishers: int = 4,
                 tick_s: float = 0.005,
                 client: httpx.AsyncClient | None = None, tag: str | None = None, window_s: float | None = None,
                 headers: dict[str, str] | None = None):
        """headers: on every HTTP request (default: the SURGESIM_HEADER_* variables, target_env.target_headers)."""
        import os

        from surgesim.loadtests.target_env import target_headers

        self.plan = plan
        self.endpoints = dict(endpoints)
        missing = missing_endpoints(plan, self.endpoints)
        if missing:
            raise ValueError(f"no endpoint for: {', '.join(missing)}")
        self.project = self.endpoints.get(PROJECT) or plan.exp.system.project
        self.payloads = Payloads(plan, tag, project=self.project,
                                 headers=target_headers(dict(os.environ)) if headers is None else headers)
        self.recorder = Recorder(plan.time_scale, window_s or plan.exp.scenario.live.sample_interval)
        self.concurrency = concurrency
        self._client = client
        self._sem = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task] = set()
        self.t0 = 0.0
        self.prepared: dict[str, Any] = {}
        self.publishers = publishers
        self.tick_s = tick_s
        self._pubq: dict[str, list[Send]] = {}
        self._pubwake: dict[str, asyncio.Event] = {}
        self._closing = False

    # ---- sending -----------------------------------------------------------------------

    def _record(self, send: Send, ok: bool, status, sent_at: float, done: float) -> None:
        self.recorder.record(send.source.labels, send.source.count_key, send.intended - self.t0, send.intended, sent_at, done,
                             ok, status, GENERATOR)

    async def _http(self, send: Send) -> bool:
        async with self._sem:
            sent_at = time.time()
            ok, status, body, headers = await exchange(self._client, self.endpoints, send, self.project)
            done = time.time()
        self._record(send, ok, status, sent_at, done)
        return self.payloads.finish(send, ok, body, headers)

    async def _flow(self, run: FlowRun) -> None:
        """A flow's steps in order, each under the connection limit (a think holds none)."""
        self.recorder.count(run.source.name, "flows_started")
        while (nxt := run.next(time.time())) is not None:
            if isinstance(nxt, float):
                await asyncio.sleep(nxt)
                continue
            async with self._sem:
                sent_at = time.time()
                ok, status, body, headers = await exchange(self._client, self.endpoints, nxt, self.project)
                done = time.time()
            self._record(nxt, ok, status, sent_at, done)
            if not run.answer(nxt, ok, body, headers):
                break
        self.payloads.flow_done(run)
        count_flow(self.recorder, run)

    async def _publish(self, topic: str, sends: list[Send]) -> None:
        url = publish_url(self.endpoints[PUBSUB], self.project, topic)
        # Not under the HTTP semaphore: the publish workers (`publishers` per topic) are the
        # limit, and their connections are extra (run()), so a slow command server queues
        # commands only, not telemetry (dispatch_wave with its wave's commands sent).
        sent_at = time.time()
        try:
            r = await self._client.post(url, content=publish_body([s.message for s in sends]),
                                        headers={"Content-Type": "application/json"})
            ok, status = 200 <= r.status_code < 300, r.status_code
        except httpx.HTTPError as exc:
            ok, status = False, type(exc).__name__
        done = time.time()
        for s in sends:
            self._record(s, ok, status, sent_at, done)
            self.payloads.finish(s, ok)

    async def _publisher(self, topic: str) -> None:
        """One of a topic's publish workers: takes everything queued (up to 1,000) per request,
        so batches grow with the publish latency instead of one request per due ping."""
        queue, wake = self._pubq[topic], self._pubwake[topic]
        while True:
            while not queue:
                if self._closing:
                    return
                wake.clear()
                await wake.wait()
            batch = queue[:MAX_PUBLISH_BATCH]
            del queue[:MAX_PUBLISH_BATCH]
            await self._publish(topic, batch)

    def _enqueue(self, topic: str, sends: list[Send]) -> None:
        if topic not in self._pubq:
            self._pubq[topic], self._pubwake[topic] = [], asyncio.Event()
            for _ in range(self.publishers):
                self._spawn(self._publisher(topic))
        self._pubq[topic].extend(sends)
        self._pubwake[topic].set()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _preload(self, duration_s: float) -> None:
        """The scenario's `prepare:` entries before the clock starts; unmeasured (loadtests/prepare.py)."""
        if not self.plan.prepare:
            return
        started = time.time()
        entries = await run_prepare(self.plan, self.payloads, self.endpoints, self._client, duration_s=duration_s)
        self.prepared = {"entries": entries, "seconds": round(time.time() - started, 3)}

    # ---- the schedule --------------------------------------------------------------------

    async def run(self, duration_s: float | None = None, *, preload: bool = True, drain_s: float = 10.0) -> LoadResult:
        own = self._client is None
        if own:
            conns = self.concurrency + self.publishers * len(self.plan.topics())
            self._client = httpx.AsyncClient(trust_env=False, timeout=30.0, limits=httpx.Limits(
                max_connections=conns, max_keepalive_connections=conns))
        try:
            duration = self.plan.duration_s if duration_s is None else min(duration_s, self.plan.duration_s)
            if preload:
                await self._preload(duration)
            table = self.plan.timetable(duration_s=duration)
            self.t0 = time.time()
            loop_started = time.perf_counter()
            woke = 0.0
            while (nxt := table.next_time()) is not None:
                # Wake at most every tick_s: at high rates one wake-up per arrival costs more
                # than the sends (fleet step, positions); sends stay stamped with their times.
                delay = max(self.t0 + nxt, woke + self.tick_s) - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                woke = time.time()
                now = time.time() - self.t0
                batches: dict[str, list[Send]] = defaultdict(list)
                due = table.pop_due(now)
                for (wall_t, source), send in zip(due, self.payloads.build_due(due, self.t0)):
                    if send is None:
                        self.recorder.count(source.name, "starved")
                    elif isinstance(send, FlowRun):
                        self._spawn(self._flow(send))
                    elif send.message is not None:
                        batches[source.topic].append(send)
                    else:
                        self._spawn(self._http(send))
                for topic, sends in batches.items():
                    self._enqueue(topic, sends)
            schedule_s = time.perf_counter() - loop_started
            self._closing = True
            for wake in self._pubwake.values():
                wake.set()
            if self._tasks:
                done, pending = await asyncio.wait(set(self._tasks), timeout=drain_s)
                for t in pending:
                    t.cancel()
                unfinished = len(pending)
            else:
                unfinished = 0
        finally:
            if own:
                await self._client.aclose()
                self._client = None
        for name, n in table.scheduled.items():
            self.recorder.count(name, "scheduled", n)
        extra = {"run_tag": self.payloads.tag, "prepare": self.prepared, "unfinished": unfinished,
                 "schedule_wall_s": round(schedule_s, 3), "skipped_sources": self.plan.skipped,
                 "pools": self.payloads.pools.sizes(), "waves": self.plan.waves_wall()}
        return LoadResult(GENERATOR, self.plan.exp.scenario.name, self.plan.scales(), duration, self.recorder.counts,
                          self.recorder.histograms(), self.recorder.rows(), extra=extra)


async def drive_fleet(scenario_path: str | Path | None, endpoints: dict[str, str], duration_s: float | None = None,
                      out_dir: str | Path | None = None, **kwargs: Any) -> LoadResult:
    """Async form of run_fleet, for callers already inside an event loop."""
    scales = {k: kwargs.pop(k) for k in ("time_scale", "rate_scale") if k in kwargs}
    plan = LivePlan(scenario_path, only=kwargs.pop("sources", None), **scales)
    run_kw = {k: kwargs.pop(k) for k in ("preload", "drain_s") if k in kwargs}
    result = await FleetDriver(plan, endpoints, **kwargs).run(duration_s, **run_kw)
    if out_dir is not None:
        result.write(out_dir)
    return result


def run_fleet(scenario_path: str | Path | None, endpoints: dict[str, str], duration_s: float | None = None,
              out_dir: str | Path | None = None, **kwargs: Any) -> LoadResult:
    """Drive the scenario's traffic at the services for duration_s wall seconds (default: the
    whole compressed scenario). endpoints: {service: base URL, "pubsub": host:port,
    "project": id}. Options: time_scale, rate_scale (override scenario.live), sources (send
    only these, e.g. the telemetry while Locust sends the commands), concurrency,
    preload (the scenario's `prepare:` first; default True), drain_s. Writes out_dir/histograms.parquet
    and out_dir/loadgen.json when out_dir is given."""
    return asyncio.run(drive_fleet(scenario_path, endpoints, duration_s, out_dir, **kwargs))


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default=None, help="scenario YAML (default: built-in dispatch_wave.yaml)")
    ap.add_argument("--duration", type=float, default=None, help="wall seconds (default: the compressed scenario)")
    ap.add_argument("--out", default=None, help="directory for histograms.parquet and loadgen.json")
    ap.add_argument("--time-scale", type=float, default=None)
    ap.add_argument("--rate-scale", type=float, default=None)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--no-preload", action="store_true")
    ap.add_argument("--prepared", default=None, help="prepare.json of a prepare phase run before (loadtests/prepare.py)")
    ap.add_argument("--sources", default=None, help="comma-separated source names to send (default: all)")
    a = ap.parse_args(argv)
    plan = LivePlan(a.scenario, time_scale=a.time_scale, rate_scale=a.rate_scale,
                    only=a.sources.split(",") if a.sources else None)
    endpoints = endpoints_from_env(plan)
    driver = FleetDriver(plan, endpoints, concurrency=a.concurrency)
    if a.prepared:
        driver.prepared = load_prepared(driver.payloads.pools, a.prepared)
    result = asyncio.run(driver.run(a.duration, preload=not a.no_preload and not a.prepared))
    if a.out:
        result.write(a.out)
    print(json.dumps({"counts": result.counts, "lateness": result.lateness,
                      "latency": {k: v for k, v in result.latency().items() if k.startswith(("latency/", "publish/"))}},
                     indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
