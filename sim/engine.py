"""The simulator: a scenario in virtual time.

Time advances in steps of `scenario.step` seconds. Each step: the traffic sources'
arrivals for the step are drawn (Poisson counts, then uniform times within the step, so
arrivals are an exact Poisson process at the step's rate); every node (Cloud Run service,
BigQuery subscription writer) processes what has arrived, in passes until nothing due in
the step is left; then SimPy runs the per-message processes up to the step's end
(Workflows executions, Cloud Run Jobs), then the autoscalers and gauges update.

Pure: no network, no wall clock; every random stream is seeded from scenario.seed and the
component's name."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import simpy

from surgesim.histogram import Histogram
from surgesim.sim import traffic
from surgesim.sim.broker import Broker, SubState
from surgesim.sim.core import AttrTable, Batch, rng_for, sample, sorted_uniform
from surgesim.sim.deps import Api, Stores, service_call
from surgesim.sim.faults import fault_kind
from surgesim.sim.freshness import Freshness
from surgesim.sim.guard import Guard, GuardedEnvironment
from surgesim.sim.handler import Handler
from surgesim.sim.metrics import Metrics
from surgesim.sim.service import Channel, ServiceNode
from surgesim.sim.sql import SqlDb
from surgesim.sim.triggers import delivery_latency, with_trigger_subscriptions

EXACT_BELOW = 200
"""Steps bringing a node at most this many arrivals go straight to the per-message heap
(a loop is cheaper than the vectorised check there; the starts are the same)."""
HIST_WINDOWS = 1440
"""At most this many histogram windows per run (a day at 60 s)."""


class WorkflowRunner:
    """A Workflows saga: steps in order with timeout/retries/backoff; on a failed step,
    the compensations of the completed steps run in reverse."""

    def __init__(self, eng: "Engine", wf):
        self.eng = eng
        self.wf = wf
        self.rng = eng.rng(f"workflow:{wf.name}")
        self.comps = {c.name: c for c in wf.compensations}
        self.totals = {"started": 0, "succeeded": 0, "compensated": 0, "failed": 0}
        if any(st.run_job for st in [*wf.steps, *wf.compensations]):
            self.totals["jobs_started"] = 0  # executions its run_job steps started

    def start_many(self, b: Batch) -> None:
        for t in np.sort(b.t).tolist():
            self.eng.env.process(self._run(t))

    def _run(self, t: float):
        env = self.eng.env
        if t > env.now:
            yield env.timeout(t - env.now)
        self.totals["started"] += 1
        done: list = []
        for step in self.wf.steps:
            ok = yield from self._call(step)
            if ok:
                done.append(step)
                continue
            comp_ok = True
            for prev in reversed(done):
                if prev.compensate:
                    comp_ok &= (yield from self._call(self.comps[prev.compensate]))
            self.totals["compensated" if comp_ok else "failed"] += 1
            return
        self.totals["succeeded"] += 1

    def _call(self, step):
        """One step, with its retries and exponential backoff; True when an attempt succeeded."""
        env = self.eng.env
        for attempt in range(step.retries + 1):
            ok = yield from (self._run_job(step) if step.run_job is not None else self._call_once(step))
            if ok:
                return True
            if attempt < step.retries:
                yield env.timeout(step.backoff * 2.0 ** attempt)
        return False

    def _call_once(self, step):
        """A call to a service (its own steps, inline) or an external API, cut at the step's timeout."""
        env, eng = self.eng.env, self.eng
        now = env.now
        if step.call in eng.nodes:
            done, ok = eng.nodes[step.call].call_inline(now, step.name)
            dur = done - now
        else:
            lat, okv = eng.apis[step.call].call(np.array([now]), None, self.rng, step.latency)
            dur, ok = float(lat[0]), bool(okv[0])
        if dur > step.timeout:
            dur, ok = step.timeout, False
        yield env.timeout(dur)
        return ok

    def _run_job(self, step):
        """Start an execution of the step's job (Workflows' jobs.run connector): with `wait`,
        until it ends or the step's timeout (the execution runs on), failed when a task gave up."""
        env = self.eng.env
        execution = env.process(self.eng.jobs[step.run_job].start(env.now))
        self.totals["jobs_started"] += 1
        if not step.wait:
            return True
        yield execution | env.timeout(step.timeout)
        return bool(execution.processed and execution.value)


class JobRunner:
    """A Cloud Run Job execution: tasks, at most `parallelism` at once; task i works
    through its shard of the items (by CLOUD_RUN_TASK_INDEX) batch by batch."""

    def __init__(self, eng: "Engine", job, plan):
        self.eng = eng
        self.job = job
        self.tasks = (plan.tasks if plan and plan.tasks else job.tasks)
        self.parallelism = (plan.parallelism if plan and plan.parallelism else job.parallelism)
        self.cpu = plan.cpu if plan else 1.0
        self.mem = plan.memory_gib if plan else 0.5
        self.handler = Handler(eng, f"job-{job.name}", job.steps)
        self.totals = {"tasks_run": 0, "tasks_failed": 0, "duration_s": 0.0, "vcpu_seconds": 0.0, "gib_seconds": 0.0,
                       "crashes": 0, "timeouts": 0}
        # for jobs.json (the job.NAME SLOs): first start, last end, executions started and
        # finished, tasks that used every retry and still failed
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.started = self.finished = self.gave_up = 0
        self.starts: list[float] = []
        """Each execution's start (a source's `at`, each time its schedule names, a workflow step)."""
        # job_task_crash / job_task_hang on this job: [fault, attempts it may still hit]
        self.faults = [[f, f.count] for f in eng.scenario.faults
                       if f.kind in ("job_task_crash", "job_task_hang") and f.target == job.name]

    def _fault_for(self, index: int, now: float):
        """The job fault that hits an attempt of task `index` starting now (the first
        `count` attempts in its window), or None."""
        for entry in self.faults:
            f, left = entry
            if left > 0 and f.at <= now < (f.end if f.end is not None else math.inf) and f.task in (None, index):
                entry[1] -= 1
                return f
        return None

    def start(self, t: float):
        env = self.eng.env
        if t > env.now:
            yield env.timeout(t - env.now)
        began = env.now
        self.started += 1
        self.starts.append(round(began, 3))
        self.first_start = began if self.first_start is None else self.first_start
        slots = simpy.Resource(env, capacity=self.parallelism)
        procs = [env.process(self._task(i, slots)) for i in range(self.tasks)]
        yield simpy.AllOf(env, procs)
        self.totals["duration_s"] += env.now - began
        self.finished += 1
        self.last_end = env.now
        return all(p.value for p in procs)  # the execution succeeded: no task gave up

    def record(self) -> dict:
        """This job in jobs.json: its duration on the scenario clock and whether it succeeded."""
        done = self.started and self.finished == self.started
        state = "running" if not done else ("failed" if self.gave_up else "succeeded")
        return {"state": state, "executions": self.started, "tasks_gave_up": self.gave_up, "starts_s": self.starts,
                "duration_s": round(self.last_end - self.first_start, 3) if done else None}  # failed or not

    def _task(self, index: int, slots):
        env, job = self.eng.env, self.job
        with slots.request() as req:
            yield req
            items = job.items // self.tasks + (1 if index < job.items % self.tasks else 0)
            batches = math.ceil(items / job.batch_size) if items else 0
            for attempt in range(job.max_retries + 1):
                began = env.now
                ok = True
                fault = self._fault_for(index, began)
                if fault is not None:
                    # crash: the attempt dies `after` seconds in (its work until then is not
                    # modelled); hang: it makes no progress until task_timeout ends it
                    if fault.kind == "job_task_crash":
                        yield env.timeout(min(float(fault.after or 0.0), job.task_timeout))
                        self.totals["crashes"] += 1
                    else:
                        yield env.timeout(job.task_timeout)
                        self.totals["timeouts"] += 1
                    batches_left = 0
                    ok = False
                else:
                    batches_left = batches
                for _ in range(batches_left):
                    b = Batch.new(np.array([env.now]))
                    res = self.handler.run(b)
                    self.handler.apply(res, b, np.array([env.now]), np.ones(1, bool))
                    yield env.timeout(float(res.svc[0]))
                    if res.fail[0] or env.now - began > job.task_timeout:
                        ok = False
                        break
                used = env.now - began
                self.totals["tasks_run"] += 1
                self.totals["vcpu_seconds"] += used * self.cpu
                self.totals["gib_seconds"] += used * self.mem
                if ok:
                    return True
                self.totals["tasks_failed"] += 1
            self.gave_up += 1  # max_retries + 1 attempts, every one failed
            return False


class Engine:
    def __init__(self, exp, *, seed: int | None = None, exact: bool = False, exact_below: int = EXACT_BELOW,
                 part: Any = None, guard: dict | None = None):
        self.exp = exp
        # A partition of a split run (sim/split.py): which sources, fault actions and
        # topics this engine owns, what it hands to the other process and takes from it.
        self.part = part
        self.cut = None  # set by sim.split.run_experiment: where a two-process run was cut
        self.captured: dict[str, list[Batch]] = {t: [] for t in part.exports} if part is not None else {}
        self.scenario = sc = exp.scenario
        # a Pub/Sub trigger is the push subscription Eventarc creates for it (sim/triggers.py)
        self.system = with_trigger_subscriptions(exp.system)
        self.triggers = {t.name: t for t in self.system.triggers}
        self.seed = sc.seed if seed is None else seed
        self.exact = exact
        self.exact_below = exact_below
        self.duration = float(sc.duration)
        self.step = float(min(sc.step, sc.duration))
        nwin = int(math.ceil(self.duration / self.step - 1e-9))
        hist_every = max(1, math.ceil(nwin / HIST_WINDOWS))
        self.metrics = Metrics(self.duration, self.step, hist_every * self.step)
        # Guard limits (sim/guard.py) may be given as keyword arguments: tests lower them,
        # the CLI adds a wall clock.
        self.guard = Guard(self.step, **(guard or {}))
        self.env = GuardedEnvironment(self.guard)
        self.attrs = AttrTable()
        self.broker_down: list[tuple[float, float]] = []
        self.poison_attr_ids: set[int] = set()
        """Attribute sets every consumer fails: poison messages, checks of failed BigQuery jobs."""
        self.job_failures: list = []
        """bigquery_job_failure faults (read by sim/handler.py's bigquery job step)."""
        self.job_slowdowns: list = []
        """bigquery_job_slow faults with their random streams (read by the same step)."""
        for f in sc.faults:  # what the stores and the broker read while they are built (sim/faults.py)
            fault_kind(f).prepare(self, f)
        self._sent: dict[str, int] = {}  # messages each source sent so far (a fleet's keys go round)
        self.freshness = {c.name: Freshness(c.name, exp.plan.read_every.get(c.name))
                          for c in self.system.stores.firestore if c.freshness}
        self.stores = Stores(self)
        self.sql = {d.name: SqlDb(d) for d in self.system.stores.sql}
        self.broker = Broker(self)
        self.apis = {a.name: Api(self, a, [f for f in sc.faults if f.target == a.name and fault_kind(f).on_api])
                     for a in self.system.external_apis}
        self.nodes: dict[str, ServiceNode] = {}
        self._build()

    def rng(self, name: str) -> np.random.Generator:
        return rng_for(self.seed, name)

    def error_rate(self, owner: str) -> float:
        svc = next((s for s in self.system.services if s.name == owner), None)
        return svc.error_rate if svc is not None else 0.0

    # ---- topology ----------------------------------------------------------------------

    def _build(self) -> None:
        exp, sysm, sc = self.exp, self.system, self.scenario
        for svc in sysm.services:
            node = ServiceNode(self, svc.name, exp.service_plan(svc.name))
            self.nodes[svc.name] = node
            node.route_ch = {}
            for r in exp.routes(svc.name):
                node.route_ch[r.name] = node.add_channel(Channel("route", r.name, Handler(self, svc.name, r.steps, exp.debounce(svc.name))))
            for trig in sysm.triggers:
                if trig.target == svc.name and trig.kind != "pubsub":
                    node.add_channel(Channel("trigger", trig.name, Handler(self, svc.name, exp.steps(svc.name), exp.debounce(svc.name))))
        self.workflows = {wf.name: WorkflowRunner(self, wf) for wf in sysm.workflows}
        self.jobs = {j.name: JobRunner(self, j, exp.plan.jobs.get(j.name)) for j in sysm.jobs}
        self.trigger_ch = {}
        # one stream per trigger for the whole run: a generator made per call restarted the
        # same seed, so every step's few events drew the same first delays
        self.trigger_rng = {t.name: self.rng(f"trigger:{t.name}") for t in sysm.triggers}
        self.trigger_changes: dict[str, int] = {}
        self.trigger_started: dict[str, int] = {}
        for trig in sysm.triggers:
            if trig.target in self.nodes and trig.kind != "pubsub":
                node = self.nodes[trig.target]
                self.trigger_ch[trig.name] = next(i for i, c in enumerate(node.channels) if c.kind == "trigger" and c.name == trig.name)
        for sub in sysm.subscriptions:
            st = SubState(self, sub, exp.plan.subscription(sub.name))
            self.broker.add(st)
            if sub.delivery == "bigquery":
                rate = sysm.stores.bigquery_latency.subscription_rows_per_s
                node = ServiceNode(self, f"bigquery:{sub.name}", exp.service_plan("__none__"), fixed_slots=1,
                                   fixed_service_s=1.0 / rate)
                st.node, st.ch = node, node.add_channel(Channel("bigquery", sub.name, None, st))
                self.nodes[node.name] = node
            elif sub.consumer in self.nodes:
                node = self.nodes[sub.consumer]
                st.node = node
                st.ch = node.add_channel(Channel("sub", sub.name, Handler(self, sub.consumer, exp.steps(sub.consumer), exp.debounce(sub.consumer)), st))
            elif sub.consumer in self.workflows:
                st.workflow = self.workflows[sub.consumer]
        for f in sc.faults:  # what the services and subscriptions hold of each fault
            fault_kind(f).attach(self, f)
        self.sources = []
        self.source_bytes: dict[str, int | None] = {}
        for index, src in enumerate(sc.traffic.sources):
            if self.part is not None and src.name not in self.part.sources:
                continue
            if src.publish is not None:
                self.source_bytes[src.name] = self._message_bytes(src, index)
            rng = self.rng(f"source:{src.name}")
            if src.kind in ("once", "schedule"):
                counts = None
            else:
                counts = traffic.arrival_counts(self.exp, src, 0.0, self.step, self.metrics.nwin, rng)
            attrs = self.attrs.intern(src.publish.attributes) if src.publish is not None else 0
            self.sources.append((src, rng, counts, attrs))
        self.actions = self._timeline()
        self._after_step: list[Callable[[float], None]] = []

    def _timeline(self) -> list[tuple[float, int, Callable[[], None]]]:
        acts = []
        part = self.part
        for i, f in enumerate(self.scenario.faults):
            if part is not None and not part.owns_fault(f):
                continue
            acts += [(t, i, act) for t, act in fault_kind(f).actions(self, f)]
        for src, rng, counts, attrs in self.sources:
            for t in src.start_times(self.scenario.start_clock, self.duration):
                acts.append((t, 1000, lambda src=src, t=t: self._fire_once(src, t)))
        return sorted(acts, key=lambda a: (a[0], a[1]))

    def _message_bytes(self, src, index: int) -> int | None:
        """A publish source's message size: its own `message_bytes`, else for a templated
        one the mean size of a few renders (seeded as the load generators seed them), else
        None (the topic's `message_bytes`)."""
        pub = src.publish
        if pub.message_bytes is not None or (pub.json_ is None and pub.data is None and pub.hook is None):
            return pub.message_bytes
        from surgesim.templates import rough_size, source_payload

        payload = source_payload(src, index, self.seed, self.exp.scenario_path.parent, project=self.system.project)
        return max(1, round(rough_size(payload)))

    def _fire_once(self, src, t: float) -> None:
        if src.job is not None:
            self.env.process(self.jobs[src.job].start(t))
        else:
            self._deliver_source(src, Batch.new(np.array([t])), 0)

    def _replay(self, f, end: float) -> None:
        """The fix, replayed. Seek the target's subscriptions back to the deploy: every message
        published since is delivered once more at `end`, the dead-lettered ones included,
        except those still waiting for their next attempt (they get it anyway: one message,
        one more delivery). The dead letters the seek re-delivers are then acked on the
        dead-letter holding subscriptions, not re-published: a re-publish would deliver them a
        second time, and to every other subscription of the topic too. A waiting message whose
        attempt falls between the step's start and the fix still meets the bad version and may
        be dead-lettered after the seek: at the step's end those few are delivered again from
        the seek's history and acked on the hold the same way. Dead letters published before
        the deploy are not covered by a seek to it, and stay held."""
        node = self.nodes[f.target]
        for st in list(self.broker.subs.values()):
            if st.node is not node:
                continue
            waiting = [b.pub for ci, b in node.inbox if ci == st.ch and len(b)]
            if st.seek(f.at, end, exclude_pub=np.concatenate(waiting) if waiting else None) is None:
                continue
            if st.sub.dead_letter is None:
                continue
            self._ack_held(st, st.dead_letters_published(f.at, end), end)
            seen = len(st.dead_log)
            self._after_step.append(lambda t1, st=st, f=f, end=end, seen=seen: self._replay_late(st, f.at, end, seen, t1))

    def _replay_late(self, st, at: float, end: float, seen: int, now: float) -> None:
        late = st.dead_letters_published(at, end, after=seen)
        if late[0].size:
            st.seek(at, now, only_pub=late[1])
            self._ack_held(st, late[0], now)

    def _ack_held(self, st, dead_at: np.ndarray, now: float) -> None:
        for hold in self.broker.subs_of[st.sub.dead_letter.topic]:
            if hold.node is None and hold.workflow is None:
                hold.ack_held(now, dead_at)

    def trigger_event(self, trig, times: np.ndarray, keys: np.ndarray, change: str | None) -> None:
        node = self.nodes.get(trig.target)
        attrs = self.attrs.intern({"eventType": change} if change else {"eventType": trig.event_type})
        # each event on its own delivery latency: Eventarc does not keep them in order
        # pub: the change's time, so that the trigger's lag (change -> handled) and Eventarc's
        # retention both count from it
        tp = self.exp.plan.triggers.get(trig.name)  # the environment's figure (e.g. calibrated) over Eventarc's
        latency = tp.delivery_latency if tp is not None else delivery_latency(trig)
        delivered = times + sample(latency, times.size, self.trigger_rng[trig.name])
        b = Batch.new(delivered, attrs, keys, pub=times)
        self.trigger_changes[trig.name] = self.trigger_changes.get(trig.name, 0) + len(b)
        if node is not None:
            node.enqueue(self.trigger_ch[trig.name], b)
        elif trig.target in self.workflows:
            # A workflow execution starts on the event: delivered at once.
            self.trigger_started[trig.name] = self.trigger_started.get(trig.name, 0) + len(b)
            self.workflows[trig.target].start_many(b)

    def call(self, name: str, tt: np.ndarray, attrs: np.ndarray, timeout: float | None, rng) -> tuple[np.ndarray, np.ndarray]:
        if name in self.apis:
            return self.apis[name].call(tt, timeout, rng)
        return service_call(self, name, tt)

    # ---- sources -----------------------------------------------------------------------

    def _deliver_source(self, src, b: Batch, attrs: int) -> None:
        if getattr(src, "flow", None) is not None:
            # The simulator models rates, not users: each step of a flow is an arrival at the
            # flow's rate, delayed by the mean think time before it (docs/your-system.md).
            # Pools (take/put/let) are the live generators' bookkeeping; here a source with
            # them is a plain rate source.
            for step, delay in zip(src.flow.steps, src.flow.think_means):
                if step.think is None:
                    step_attrs = self.attrs.intern(step.publish.attributes) if step.publish is not None else 0
                    self._deliver_source(step, Batch.new(b.t + delay, step_attrs, b.key.copy()), step_attrs)
        elif src.publish is not None:
            b.attrs[:] = attrs
            # a flow's publish step has no name of its own: its stated size, else the topic's
            self.broker.publish(src.publish.topic, b, self.source_bytes.get(getattr(src, "name", None), src.publish.message_bytes))
        elif src.request is not None:
            node = self.nodes[src.request.service]
            node.enqueue(node.route_ch[src.request.route], b)
        elif getattr(src, "workflow", None) is not None:
            self.workflows[src.workflow].start_many(b)
        elif src.firestore is not None:  # a client's own write: what it starts is the trigger path
            for trig in self.exp.system.triggers:
                if trig.collection == src.firestore.collection and _trigger_sees(trig, src.firestore.op):
                    self.trigger_event(trig, b.t, b.key, None)
        # storage: an upload has no downstream in the model (no storage triggers yet)

    # ---- the run -----------------------------------------------------------------------

    def run(self, progress: Callable[[int, int], None] | None = None) -> "Engine":
        nwin = self.metrics.nwin
        subs = list(self.broker.subs.values())
        nodes = list(self.nodes.values())
        if self.part is not None:  # what the other partition runs gets no traffic here: skip it
            subs = [st for st in subs if st.sub.topic in self.part.topics]
            nodes = [n for n in nodes if n.name in self.part.nodes
                     or any(st.node is n for st in subs if st.sub.delivery == "bigquery")]
        ai = 0
        for k in range(nwin):
            t0 = k * self.step
            t1 = min(self.duration, t0 + self.step)
            self.guard.begin_step(t0)
            while ai < len(self.actions) and self.actions[ai][0] < t1:
                self.actions[ai][2]()
                ai += 1
            for src, rng, counts, attrs in self.sources:
                if counts is None or counts[k] == 0:
                    continue
                n = int(counts[k])
                times = sorted_uniform(t0, t1, n, rng)
                keys = traffic.message_keys(src, n, rng, self._sent.get(src.name, 0))
                self._sent[src.name] = self._sent.get(src.name, 0) + n
                self._deliver_source(src, Batch.new(times, attrs, keys), attrs)
            if self.part is not None:
                for topic, b in self.part.take(k):
                    self.broker.publish(topic, b)
            for _ in range(16):
                busy = False
                for node in nodes:
                    if node.inbox and node.has_due(t1):
                        node.process(t0, t1)
                        busy = True
                if not busy:
                    break
            self.env.run(until=t1)
            for fresh in self.freshness.values():
                fresh.read(self.metrics, t0, t1)
            while self._after_step:  # what must see the whole step settled (a replay's stragglers)
                self._after_step.pop(0)(t1)
            for node in nodes:
                node.end_step(k, t0, t1)
            for st in subs:
                st.end_step(k, t1)
            if self.part is not None:
                self.part.hand_over(k, self.captured)
            if progress is not None:
                progress(k + 1, nwin)
        self.metrics.finish_histograms()
        self._backlog_gauges()
        return self

    def _backlog_gauges(self) -> None:
        m = self.metrics
        for name in self.broker.subs:
            level = (m.cumulative("_published", name) - m.cumulative("acked", name)
                     - m.cumulative("dead_lettered", name) - m.cumulative("filtered", name)
                     - m.cumulative("_expired", name))
            m.set_gauge_series("backlog", name, level)

    # ---- results -----------------------------------------------------------------------

    def totals(self) -> dict:
        m = self.metrics
        subs = {}
        for name, st in self.broker.subs.items():
            backlog = m.gauges[("backlog", name)]
            oldest = m.gauges.get(("oldest_unacked", name))
            t = {k: int(m.total(k, name)) for k in ("delivered", "acked", "nacked", "dead_lettered", "filtered")}
            t["published"] = int(m.total("_published", name))
            t["expired"] = int(m.total("_expired", name))
            t["redelivered"] = st.totals["redelivered"]
            t["replayed"] = st.totals["replayed"]
            t["backlog"] = int(round(backlog[-1])) if backlog.size else 0
            t["peak_backlog"] = int(round(np.nanmax(backlog))) if backlog.size else 0
            t["peak_oldest_unacked_s"] = float(np.nanmax(oldest)) if oldest is not None and oldest.size else 0.0
            if st.dl_attempts:
                t["dead_letter_attempts"] = {"min": int(min(st.dl_attempts)), "max": int(max(st.dl_attempts))}
            subs[name] = t
        services = {}
        for svc in self.system.services:
            node = self.nodes[svc.name]
            plan = node.plan
            tot = dict(node.totals)
            tot["requests"] = int(tot["requests"])
            tot["vcpu_seconds"] = tot["instance_seconds"] * plan.cpu
            tot["gib_seconds"] = tot["instance_seconds"] * plan.memory_gib
            services[svc.name] = tot
        return {
            "topics": {k: dict(v) for k, v in self.broker.topic_totals.items()},
            "subscriptions": subs,
            "services": services,
            "routes": self.route_totals(),
            "triggers": self.trigger_totals(),
            "firestore": {k: dict(v) for k, v in self.stores.firestore.items()},
            "bigquery": {k: dict(v) for k, v in self.stores.bigquery.items()},
            "apis": {k: dict(a.totals) for k, a in self.apis.items()},
            "sql": {k: {**d.totals, "max_pool_wait_s": round(d.max_pool_wait, 6)} for k, d in self.sql.items()},
            "jobs": {k: dict(j.totals) for k, j in self.jobs.items()},
            "workflows": {k: dict(w.totals) for k, w in self.workflows.items()},
        }

    def route_totals(self) -> dict:
        """Per SERVICE.ROUTE, what the clients got back, in the live harness's shape: answers
        by status code (the route's response_status when handled, 500 when the handler
        failed, 429 when rejected at max instances, 503 while a consumer_down fault holds the
        service down); `errors` = answers that failed."""
        out = {}
        for svc in self.system.services:
            node = self.nodes[svc.name]
            for r in self.exp.routes(svc.name):
                c = node.route_totals.get(r.name)
                if c is None or not c["requests"]:
                    continue
                status = {str(r.response_status): c["ok"], "500": c["failed"], "429": c["rejected"], "503": c["down"]}
                out[f"{svc.name}.{r.name}"] = {"requests": c["requests"], "status": {k: v for k, v in status.items() if v},
                                               "rejected": c["rejected"], "errors": c["failed"]}
        return out

    def trigger_totals(self) -> dict:
        """Per trigger: document changes, deliveries acknowledged, given up (Eventarc's 24 h),
        and pending, counted from the queues rather than by difference."""
        out = {}
        for trig in self.system.triggers:
            if trig.kind == "pubsub":
                continue  # its push subscription is reported with the subscriptions
            changes = self.trigger_changes.get(trig.name, 0)
            node = self.nodes.get(trig.target)
            if node is not None:
                ci = self.trigger_ch[trig.name]
                tc = node.trigger_totals.get(trig.name, {"delivered": 0, "given_up": 0})
                pending = sum(len(b) for c, b in node.inbox if c == ci)
                out[trig.name] = {"changes": changes, "delivered": tc["delivered"], "given_up": tc["given_up"],
                                  "pending": pending}
            else:
                out[trig.name] = {"changes": changes, "delivered": self.trigger_started.get(trig.name, 0),
                                  "given_up": 0, "pending": 0}
        return out

    def conservation(self, totals: dict) -> dict:
        out, ok = {}, True
        for name, st in self.broker.subs.items():
            t = totals["subscriptions"][name]
            structural = st.structural_backlog(self.duration)
            balance = t["published"] - t["acked"] - t["dead_lettered"] - t["filtered"] - t["expired"] - t["backlog"]
            row = {k: t[k] for k in ("published", "acked", "dead_lettered", "filtered", "backlog", "expired")}
            row["balance"] = balance
            row["backlog_in_queues"] = structural
            ok &= balance == 0 and structural == t["backlog"]
            out[name] = row
        return {"ok": bool(ok), "subscriptions": out}

    def latency_summaries(self) -> tuple[dict, dict]:
        lat, lag = {}, {}
        for path, h in sorted(self.metrics.totals.items()):
            kind, _, entity = path.partition("/")
            if kind in ("latency", "lag"):
                (lat if kind == "latency" else lag)[entity] = h.summary()
        return lat, lag

    def freshness_summaries(self) -> dict:
        """Per collection with `freshness: true`: the age of the newest message each key's
        document shows, at every step (sim/freshness.py)."""
        return {path.partition("/")[2]: h.summary() for path, h in sorted(self.metrics.totals.items())
                if path.startswith("freshness/")}

    def wait_summaries(self) -> dict:
        """Queueing delay per service and per channel (route, subscription, trigger):
        count, mean, p50..max of the waits and pwait, the fraction that waited at all
        (longer than the histograms' 1 us floor). A service's entry merges its channels."""
        out: dict[str, dict] = {}
        merged: dict[str, Histogram] = {}
        for path, h in sorted(self.metrics.totals.items()):
            kind, _, entity = path.partition("/")
            if kind != "wait":
                continue
            out[entity] = wait_summary(h)
            svc = entity.partition(".")[0]
            merged.setdefault(svc, Histogram()).merge(h)
        for svc, h in merged.items():
            out[svc] = wait_summary(h)
        return dict(sorted(out.items()))

    def queue_stats(self) -> dict:
        """How each node's messages were queued (docs/simulator.md): every start is FCFS
        over the slots; `vectorised` counts the messages placed by the vectorised no-wait
        check, `per_message` those placed one by one (a queue stood, or `--exact`)."""
        return {name: dict(node.qstats) for name, node in sorted(self.nodes.items()) if node.qstats["steps"]}

    def fault_events(self) -> list[dict]:
        ev = []
        for f in self.scenario.faults:
            ev.append({"kind": f.kind, "target": f.target or f.topic or "", "start_s": f.at,
                       "end_s": f.at if fault_kind(f).instant else f.end, "details": f.details(fault_kind(f).instant)})
        return ev + [w.event() for w in self.scenario.traffic.waves]


def wait_summary(h: Histogram) -> dict:
    out = h.summary()
    out["pwait"] = 1.0 - float(h.counts[0]) / h.count if h.count else None
    return out


def run(exp, *, seed: int | None = None, exact: bool = False, progress=None, guard: dict | None = None) -> Engine:
    return Engine(exp, seed=seed, exact=exact, guard=guard).run(progress)


__all__ = ["Engine", "run", "sample"]


def _trigger_sees(trig, op: str) -> bool:
    """Whether a trigger's event types include a client write of kind `op`."""
    kind = {"create": "created", "set": "written", "update": "updated", "delete": "deleted"}[op]
    return "written" in trig.events or kind in trig.events or (op == "set" and "created" in trig.events)
