"""Locust users and load shape for a surgesim scenario (imported by the locustfile
loadtests/locustfile.py; usable from your own locustfile).

Open model: users do not think and do not set the rate. Each user group (HTTP senders,
publishers) shares one seeded Poisson timetable of intended send
times drawn from the scenario (plan.py: the simulator's own NHPP, compressed by
time_scale, thinned by rate_scale); a user takes the next due send, or sleeps until one is
due. When users fall behind (a slow server holds them), the send goes out late but keeps
its intended time, in the header X-Intended-Time / attribute intendedTime, and its latency
is measured from that time: no coordinated omission.

The LoadTestShape sizes the user pool from the scenario's rate (rate x SURGESIM_USER_WINDOW_S
concurrent sends, a little ahead of time, never shrinking so that no in-flight send is
killed) and ends the test after the scenario's wall duration plus a short drain.

Publishes go over the Pub/Sub emulator's REST publish (up to 1,000 messages per request)
with Locust's geventhttpclient session: the gRPC client does not survive gevent.

Configuration (environment):
    SURGESIM_SCENARIO      scenario YAML (the locustfile's default otherwise)
    SURGESIM_PLAN          plan YAML overriding the scenario's
    SURGESIM_DURATION      wall seconds to run (default: the compressed scenario)
    SURGESIM_TIME_SCALE, SURGESIM_RATE_SCALE   override scenario.live
    SURGESIM_OUT_DIR       write histograms.parquet + loadgen.json there at the end
    SURGESIM_SOURCES       comma-separated source names: send only these
    SURGESIM_PRELOAD       1 (default): run the scenario's `prepare:` before the clock starts
    SURGESIM_PREPARED      prepare.json of a prepare phase a live harness ran (then set PRELOAD=0)
    SURGESIM_USER_WINDOW_S expected seconds per send (default 0.25), for pool sizing
    SURGESIM_MAX_USERS     cap on HTTP users (default 200)
    SURGESIM_WORKERS       with Locust's --processes N / --master + N --worker: N (each worker
                           sends its share of the one schedule; see docs/loadtests.md)
    <SERVICE>_URL          COMMAND_URL, APP_URL, ...; else Locust's --host for every service
    PUBSUB_EMULATOR_HOST, GOOGLE_CLOUD_PROJECT
    SURGESIM_HEADER_<NAME> a header on every HTTP request (SURGESIM_HEADER_AUTHORIZATION -> Authorization)
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import gevent
import gevent.pool
from locust import LoadTestShape, User, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.runners import MasterRunner, WorkerRunner

from surgesim.loadtests import distributed
from surgesim.loadtests.actions import (MAX_PUBLISH_BATCH, FlowRun, Payloads, Send, count_flow, emulator_base,
                                        load_prepared, publish_body, publish_path)
from surgesim.loadtests.plan import HTTP_GROUP, PROJECT, PUBLISH_GROUP, PUBSUB, LivePlan, endpoints_from_env, missing_endpoints
from surgesim.loadtests.recorder import LoadResult, Recorder
from surgesim.loadtests.runner import worker_dir
from surgesim.loadtests.shape import RateShape

GENERATOR = "locust"
GROUPS = (HTTP_GROUP, PUBLISH_GROUP)


class _State:
    """One process's shared run state (gevent: greenlets share it without locks because
    nothing here yields between reading and updating)."""

    plan: LivePlan | None = None
    endpoints: dict[str, str] = {}
    payloads: Payloads | None = None
    recorder: Recorder | None = None
    tables: dict = {}
    duration_s: float = 0.0
    t0: float | None = None
    inflight: int = 0
    prepared: dict = {}
    written: bool = False
    share: tuple[int, int] = (0, 1)
    """(worker index, workers): this process sends every n-th send of the schedule."""

    def setup(self, host: str | None, share: tuple[int, int] = (0, 1)) -> None:
        self.share = share
        scales = {}
        for key in ("time_scale", "rate_scale"):
            v = os.environ.get(f"SURGESIM_{key.upper()}")
            if v:
                scales[key] = float(v)
        only = os.environ.get("SURGESIM_SOURCES")
        self.plan = LivePlan(os.environ.get("SURGESIM_SCENARIO") or None, os.environ.get("SURGESIM_PLAN") or None,
                             only=[x.strip() for x in only.split(",") if x.strip()] if only else None, **scales)
        self.endpoints = endpoints_from_env(self.plan)
        for svc in self.plan.services():
            if svc not in self.endpoints and host:
                self.endpoints[svc] = host
        missing = missing_endpoints(self.plan, self.endpoints)
        if missing:
            raise RuntimeError(f"set {', '.join(missing)} (or --host for the HTTP services)")
        d = os.environ.get("SURGESIM_DURATION")
        self.duration_s = min(float(d), self.plan.duration_s) if d else self.plan.duration_s
        from surgesim.loadtests.target_env import target_headers

        # SURGESIM_HEADER_*: a target's auth on every HTTP request (surgesim live --target-env, surgesim worker)
        self.payloads = Payloads(self.plan, project=self.endpoints.get(PROJECT), headers=target_headers(dict(os.environ)))
        prepared = os.environ.get("SURGESIM_PREPARED")
        self.prepared = load_prepared(self.payloads.pools, prepared, share=share) if prepared else {}
        self.recorder = Recorder(self.plan.time_scale, self.plan.exp.scenario.live.sample_interval)
        self.tables = {g: self.plan.timetable(srcs, duration_s=self.duration_s, share=share)
                       for g, srcs in self.plan.groups().items()}
        self.t0, self.inflight, self.written = None, 0, False

    def now(self) -> float:
        """Wall seconds since the schedule's start."""
        return 0.0 if self.t0 is None else time.time() - self.t0

    def result(self) -> LoadResult:
        for table in self.tables.values():
            for name, n in table.scheduled.items():
                self.recorder.count(name, "scheduled", n)
        extra = {"run_tag": self.payloads.tag, "share": list(self.share), "prepare": self.prepared,
                 "skipped_sources": self.plan.skipped, "pools": self.payloads.pools.sizes(), "waves": self.plan.waves_wall(),
                 "unfinished": self.inflight}
        return LoadResult(GENERATOR, self.plan.exp.scenario.name, self.plan.scales(), self.duration_s,
                          self.recorder.counts, self.recorder.histograms(), self.recorder.rows(), extra=extra)


STATE = _State()


def _session(environment, base_url: str, user=None) -> FastHttpSession:
    return FastHttpSession(base_url=base_url, request_event=environment.events.request, user=user,
                           connection_timeout=10.0, network_timeout=30.0)


@events.init.add_listener
def _on_init(environment, **_kw):
    STATE.setup(environment.host)
    distributed.register(environment)


def workers(environment=None) -> int:
    """SURGESIM_WORKERS, else (a worker started by `surgesim worker`) the master's --expect-workers."""
    n = os.environ.get("SURGESIM_WORKERS")
    if not n and environment is not None and environment.parsed_options is not None:
        n = getattr(environment.parsed_options, "expect_workers", None)
    return max(1, int(n or 1))


@events.test_start.add_listener
def _on_test_start(environment, **_kw):
    runner = environment.runner
    if isinstance(runner, WorkerRunner):  # its index is known once the master acknowledged it
        n = workers(environment)
        if runner.worker_index >= n:
            raise RuntimeError(f"worker index {runner.worker_index} but SURGESIM_WORKERS={n}: "
                               "set SURGESIM_WORKERS to the number of workers on every process")
        STATE.setup(environment.host, share=(runner.worker_index, n))
    elif STATE.t0 is not None:  # started again from the web UI: a fresh schedule
        STATE.setup(environment.host)
    if os.environ.get("SURGESIM_PRELOAD", "1") != "0" and not isinstance(runner, MasterRunner):
        _preload(environment)
    STATE.t0 = time.time()


def _preload(environment) -> None:
    """The scenario's `prepare:` before the clock, in a child process (loadtests/prepare.py:
    asyncio and httpx, which gevent's patched sockets do not serve), this process's share;
    its pools are loaded from the prepare.json it writes. Unmeasured."""
    if not STATE.plan.prepare:
        return
    import subprocess
    import sys
    import tempfile

    from surgesim.loadtests.runner import host_env

    k, n = STATE.share
    with tempfile.TemporaryDirectory(prefix="surgesim-prepare-") as tmp:
        out = Path(tmp) / "prepare.json"
        cmd = [sys.executable, "-m", "surgesim.loadtests.prepare", "--scenario", str(STATE.plan.scenario_path),
               "--out", str(out), "--share", f"{k}/{n}", "--duration", repr(STATE.duration_s),
               "--time-scale", repr(STATE.plan.time_scale), "--rate-scale", repr(STATE.plan.rate_scale)]
        env = {**os.environ, **host_env(STATE.endpoints)}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"prepare failed: {done.stderr.strip()[-2000:]}")
        STATE.prepared = load_prepared(STATE.payloads.pools, out)


@events.request.add_listener
def _on_request(context=None, response_time=None, **_kw):
    # Locust's own response time for this request, handed back to the user that sent it.
    if context and "meta" in context:
        context["meta"]["response_s"] = (response_time or 0.0) / 1000.0


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw):
    out = os.environ.get("SURGESIM_OUT_DIR")
    if isinstance(environment.runner, MasterRunner):
        return  # the workers send and measure; the caller merges their results (recorder.merge_results)
    if out and STATE.recorder is not None and not STATE.written:
        if isinstance(environment.runner, WorkerRunner):
            out = worker_dir(out, STATE.share[0])
        STATE.result().write(Path(out))
        STATE.written = True
        distributed.forward(environment, Path(out))


class ScheduledUser(User):
    """Takes due sends from its group's shared timetable; never paces itself."""

    abstract = True
    group = ""
    batch = 1

    def wait_time(self):
        return 0

    def on_start(self):
        self.sessions: dict[str, FastHttpSession] = {}

    def session(self, key: str, base_url: str) -> FastHttpSession:
        s = self.sessions.get(key)
        if s is None:
            s = self.sessions[key] = _session(self.environment, base_url, self)
        return s

    @task
    def send_due(self):
        self.serve(self.group)

    def serve(self, group: str) -> None:
        """Take the group's due sends (at most its class's batch) and send them the way its
        class does; sleep until the next one when none is due."""
        table = STATE.tables.get(group)
        if table is None or STATE.t0 is None:
            gevent.sleep(0.1)
            return
        now = STATE.now()
        cls = USER_CLASSES[group]
        due = table.pop_due(now, limit=cls.batch)
        if not due:
            nxt = table.next_time()
            gevent.sleep(0.5 if nxt is None else min(max(nxt - now, 0.0), 0.1))
            return
        sends = []
        for (wall_t, source), send in zip(due, STATE.payloads.build_due(due, STATE.t0)):
            if send is None:
                STATE.recorder.count(source.name, "starved")
            elif isinstance(send, FlowRun):
                STATE.inflight += 1
                try:
                    self.flow(send)
                finally:
                    STATE.inflight -= 1
            else:
                sends.append((wall_t, send))
        if sends:
            STATE.inflight += len(sends)
            try:
                cls.send(self, sends)
            finally:
                STATE.inflight -= len(sends)

    def send(self, sends: list[tuple[float, Send]]) -> None:
        for wall_t, send in sends:
            ok, r = self.exchange(wall_t, send)
            STATE.payloads.finish(send, ok, r.content if send.source.capture else None, r.headers)

    def exchange(self, wall_t: float, send: Send):
        """One send on the wire (a publish: its one message), measured: (ok, response)."""
        meta: dict = {}
        sent_at = time.time()
        if send.message is not None:
            host = STATE.endpoints[PUBSUB]
            project = STATE.endpoints.get(PROJECT) or STATE.plan.exp.system.project
            r = self.session(PUBSUB, emulator_base(host)).request(
                "POST", publish_path(project, send.source.topic), data=publish_body([send.message]),
                headers={"Content-Type": "application/json"}, name=f"publish {send.source.topic}", context={"meta": meta})
        else:
            svc = send.source.service
            r = self.session(svc, STATE.endpoints[svc]).request(
                send.method, send.path, data=send.body, headers=send.headers, name=send.label.split("/", 1)[1],
                context={"meta": meta})
        done = time.time()
        ok = 200 <= (r.status_code or 0) < 300
        STATE.recorder.record(send.source.labels, send.source.count_key, wall_t, send.intended, sent_at, done, ok,
                              r.status_code or type(r.error).__name__, GENERATOR)
        if "response_s" in meta and send.message is None:  # Locust's own figure, beside ours
            STATE.recorder.sample("locust_" + send.label.split("/", 1)[0] + "/" + send.label.split("/", 1)[1],
                                  wall_t, meta["response_s"])
        return ok, r

    def flow(self, run: FlowRun) -> None:
        """A flow's steps in order; a think step sleeps this user (gevent)."""
        STATE.recorder.count(run.source.name, "flows_started")
        while (nxt := run.next(time.time())) is not None:
            if isinstance(nxt, float):
                gevent.sleep(nxt)
                continue
            ok, r = self.exchange(nxt.intended - STATE.t0, nxt)
            if not run.answer(nxt, ok, r.content if nxt.source.capture else None, r.headers):
                break
        STATE.payloads.flow_done(run)
        count_flow(STATE.recorder, run)


class RequestUser(ScheduledUser):
    """Sends the due HTTP requests, Firestore / Storage writes and flows."""

    group = HTTP_GROUP


class PublishUser(ScheduledUser):
    """Publishes the due messages (a fleet's pings, other publish sources) in REST batches."""

    group = PUBLISH_GROUP
    batch = MAX_PUBLISH_BATCH

    def send(self, sends: list[tuple[float, Send]]) -> None:
        by_topic: dict[str, list[tuple[float, Send]]] = defaultdict(list)
        for item in sends:
            by_topic[item[1].source.topic].append(item)
        host = STATE.endpoints[PUBSUB]
        project = STATE.endpoints.get(PROJECT) or STATE.plan.exp.system.project
        for topic, items in by_topic.items():
            meta: dict = {}
            sent_at = time.time()
            r = self.session(PUBSUB, emulator_base(host)).request(
                "POST", publish_path(project, topic),
                data=publish_body([s.message for _, s in items]), headers={"Content-Type": "application/json"},
                name=f"publish {topic}", context={"meta": meta})
            done = time.time()
            ok = 200 <= (r.status_code or 0) < 300
            status = r.status_code or type(r.error).__name__
            for wall_t, s in items:
                STATE.recorder.record(s.source.labels, s.source.count_key, wall_t, s.intended, sent_at, done, ok, status,
                                      GENERATOR)
                STATE.payloads.finish(s, ok)


USER_CLASSES = {HTTP_GROUP: RequestUser, PUBLISH_GROUP: PublishUser}


class AnyGroupUser(ScheduledUser):
    """The only user class with workers. Locust deals users out to workers class by class
    in a fixed order (two groups, two workers: every user of one group on one worker), and a
    worker without a user of a group would never send its share of that group. This user
    serves every group: the most overdue send first, as that group's class would."""

    group = "any"

    @task
    def send_due(self):
        if STATE.t0 is None:
            gevent.sleep(0.1)
            return
        now = STATE.now()
        upcoming = {g: t.next_time() for g, t in STATE.tables.items()}
        pending = {g: t for g, t in upcoming.items() if t is not None}
        if not pending:
            gevent.sleep(0.5)
            return
        group = min(pending, key=pending.get)
        if pending[group] > now:
            gevent.sleep(min(pending[group] - now, 0.1))
            return
        self.serve(group)


class ScenarioShape(LoadTestShape):
    """The scenario's curve and waves, compressed (shape.RateShape): target_rate(t) is the
    wall-clock send rate (rate_series x rate_scale at scenario time t x time_scale); tick()
    sizes the user pool to carry it, never shrinking it (shrinking would kill users in the
    middle of a send), and stops the test at the scenario's end plus a short drain."""

    drain_s = 5.0

    def __init__(self):
        super().__init__()
        self._users: dict[str, int] = {}
        self._shape: RateShape | None = None

    @property
    def shape(self) -> RateShape:
        if self._shape is None or self._shape.plan is not STATE.plan:
            self._shape = RateShape(STATE.plan, window_s=float(os.environ.get("SURGESIM_USER_WINDOW_S", "0.25")),
                                    max_users=int(os.environ.get("SURGESIM_MAX_USERS", "200")))
        return self._shape

    def target_rate(self, wall_t: float, group: str | None = None) -> float:
        return self.shape.target_rate(wall_t, group)

    def tick(self):
        if STATE.plan is None:
            return None
        t = STATE.now()
        distributed = isinstance(self.runner, MasterRunner)
        if STATE.t0 is not None and t > STATE.duration_s:
            # a master cannot see its workers' sends in flight: it gives them the whole drain
            if (STATE.inflight == 0 and not distributed) or t > STATE.duration_s + self.drain_s:
                return None
        for group, n in self.shape.users_needed(min(t, STATE.duration_s)).items():
            self._users[group] = max(self._users.get(group, 0), n)
        if distributed:  # one class serving every group, at least one user per worker
            total = max(sum(self._users.values()), workers())
            return total, max(10.0, float(total)), [AnyGroupUser]
        classes = [USER_CLASSES[g] for g in self._users]
        total = sum(self._users.values())
        for g, n in self._users.items():  # Locust splits the total by weight
            USER_CLASSES[g].weight = max(1, n)
        return total, max(10.0, float(total)), classes
