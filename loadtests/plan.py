"""A scenario's traffic in wall-clock time: what the live load generators send, and when.

The live generators (Locust users and the asyncio fleet driver) use the simulator's own
traffic model (`surgesim.sim.traffic`), compressed and thinned by the scenario's `live`
knobs, so the live run and the simulated run see the same arrival process:

    wall time  w = scenario time / time_scale
    wall rate  r_w(w) = source_rate(scenario, w * time_scale) * rate_scale

i.e. the system under test sees the scenario's rate shape, scaled down by rate_scale, with
the day compressed by time_scale (the wave at scenario minute 90 of dispatch_wave arrives
at wall second 90 with time_scale 60). The volume sent is the scenario's volume x
rate_scale / time_scale.

Arrivals are the simulator's NHPP (`arrival_times`) on a copy of the scenario whose
`traffic.multiplier` is scaled by rate_scale / time_scale, then divided by time_scale:
thinning a Poisson process by p gives a Poisson process of rate p x the intensity, so this
is exactly the compressed, scaled process, drawn without generating the dropped arrivals.

Pure: no network, no gevent, no asyncio. Both generators import it.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from surgesim.schema import Experiment, load_experiment
from surgesim.sim import traffic

# Action kinds a live source maps to; the user group that sends each.
PUBLISH, REQUEST, FLOW = "publish", "request", "flow"
FIRESTORE, STORAGE = "firestore", "storage"
"""Writes a client makes straight to Firestore or Cloud Storage (through the emulators' REST APIs)."""
HTTP_GROUP, PUBLISH_GROUP = "http", "publish"
GROUP_OF = {PUBLISH: PUBLISH_GROUP, REQUEST: HTTP_GROUP, FIRESTORE: HTTP_GROUP, STORAGE: HTTP_GROUP, FLOW: HTTP_GROUP}
PREPARE_INDEX = 1_000_000
"""Index (seed stream) of the first `prepare:` entry: its payloads never share a stream with a source's."""
FIRESTORE_ENDPOINT, STORAGE_ENDPOINT = "firestore_emulator", "storage_emulator"
"""The endpoints' keys of the emulators that firestore / storage sources write to."""


def default_scenario() -> Path:
    """The built-in dispatch_wave.yaml."""
    return Path(str(resources.files("surgesim.scenarios").joinpath("dispatch_wave.yaml")))


@dataclass(frozen=True)
class LiveSource:
    """One scenario source as the live generators send it."""

    index: int
    name: str
    action: str
    """publish | request (an HTTP route) | firestore | storage (a write through the emulator;
    route is `firestore.<collection>` / `storage.<bucket>`, service the emulator's endpoint
    key) | flow (`steps`, each a LiveSource of its own) | think (a flow's pause)"""
    source: Any
    """The schema Source (or prepare entry); a flow step's is its flow's."""
    service: str | None = None
    route: str | None = None
    method: str = "POST"
    path: str | None = None
    topic: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    spec: Any = None
    """The target's schema (Request, Publish, FirestoreWrite, StorageWrite; a FlowStep's for a step)."""
    steps: tuple["LiveSource", ...] = ()
    """A flow's steps, in order."""
    step: int | None = None
    """A flow step's position (0-based)."""
    step_label: str | None = None
    capture: tuple[tuple[str, str], ...] = ()
    """(variable, `$.json.path` | `header:Name`) read from the answer."""
    think: Any = None
    """A think step's duration / distribution (schema Latency)."""

    @property
    def group(self) -> str:
        return GROUP_OF[self.action]

    @property
    def count_key(self) -> str:
        """The name its counts go under: the source's, a flow step's `<flow>.<label>`."""
        return self.name if self.step is None else f"{self.name}.{self.step_label}"

    @property
    def label(self) -> str:
        """The histogram path: latency/<service>.<route> for HTTP, publish/<topic> for Pub/Sub,
        write/<firestore|storage>.<collection|bucket>; a flow step with a `label:` has its own,
        flow/<flow>.<label>."""
        if self.step is not None and self.source.flow.steps[self.step].label is not None:
            return f"flow/{self.name}.{self.step_label}"
        return self.target_label

    @property
    def labels(self) -> str | tuple[str, str]:
        """What the recorder records a send under: a labelled flow step's latency goes into
        its own histogram and its target's (so route SLOs see flow traffic too)."""
        return (self.label, self.target_label) if self.label != self.target_label else self.label

    @property
    def target_label(self) -> str:
        if self.action == PUBLISH:
            return f"publish/{self.topic}"
        if self.action in (FIRESTORE, STORAGE):
            return f"write/{self.route}"
        return f"latency/{self.service}.{self.route}"


class LivePlan:
    """A scenario resolved for live traffic: its sources, their wall-clock rates, and
    seeded Poisson schedules of intended send times."""

    def __init__(self, scenario_path: str | Path | None = None, plan_path: str | Path | None = None, *,
                 time_scale: float | None = None, rate_scale: float | None = None,
                 only: Iterable[str] | None = None, experiment: Experiment | None = None):
        """only: send just these sources (by name), e.g. to split a scenario between
        Locust and the fleet driver; each keeps the schedule it has in the full plan.
        experiment: the files already loaded from scenario_path (and the plan) by the caller,
        so one process reads and checks them once."""
        # absolute: Locust runs in its output directory and reads the scenario from there
        self.scenario_path = Path(scenario_path).resolve() if scenario_path else default_scenario()
        self.exp = experiment if experiment is not None else load_experiment(self.scenario_path, plan_path)
        live = self.exp.scenario.live
        self.time_scale = float(time_scale if time_scale is not None else live.time_scale)
        self.rate_scale = float(rate_scale if rate_scale is not None else live.rate_scale)
        if self.time_scale < 1 or not 0 < self.rate_scale <= 1:
            raise ValueError(f"need time_scale >= 1 and 0 < rate_scale <= 1, got {self.time_scale}, {self.rate_scale}")
        self.duration_s = self.exp.scenario.duration / self.time_scale
        """Wall seconds the scenario lasts."""
        self.seed = int(self.exp.scenario.seed)
        self.sources, self.skipped = self._resolve()
        self.all_sources = list(self.sources)
        if only is not None:
            wanted = set(only)
            unknown = wanted - {s.name for s in self.sources} - set(self.skipped)
            if unknown:
                raise ValueError(f"no such source in {self.scenario_path.name}: {', '.join(sorted(unknown))}")
            self.sources = [s for s in self.sources if s.name in wanted]
        self._thinned_by: dict[float, Any] = {}

    def thinned(self, rate_scale: float):
        """The simulator's model, thinned: multiplier x rate_scale / time_scale (see module doc)."""
        if rate_scale not in self._thinned_by:
            traffic_ = self.exp.scenario.traffic.model_copy(update={
                "multiplier": self.exp.scenario.traffic.multiplier * rate_scale / self.time_scale})
            self._thinned_by[rate_scale] = dataclasses.replace(
                self.exp, scenario=self.exp.scenario.model_copy(update={"traffic": traffic_}))
        return self._thinned_by[rate_scale]

    def scale_of(self, source: LiveSource) -> float:
        """The source's own `rate_scale` if it has one, else the run's."""
        own = source.source.rate_scale
        return float(own) if own is not None else self.rate_scale

    # ---- sources -----------------------------------------------------------------------

    def _resolve(self) -> tuple[list[LiveSource], dict[str, str]]:
        out: list[LiveSource] = []
        skipped: dict[str, str] = {}
        for src in self.exp.scenario.traffic.sources:
            if src.kind == "once" or src.job is not None:
                skipped[src.name] = "one-off actions (jobs) are started by the live harness, not the load generator"
                continue
            live, why = self._live_source(src, len(out))
            if live is None:
                skipped[src.name] = why
            else:
                out.append(live)
        self.prepare = []
        """The scenario's `prepare:` entries, resolved like sources (run_prepare sends them)."""
        for k, entry in enumerate(self.exp.scenario.prepare):
            live, why = self._live_source(entry, PREPARE_INDEX + k)
            if live is None:
                raise ValueError(f"prepare {entry.name}: {why}")
            self.prepare.append(live)
        return out, skipped

    def _live_source(self, src: Any, i: int) -> tuple[LiveSource | None, str]:
        """A Source or prepare entry as it is sent (None, why: it cannot be)."""
        if getattr(src, "workflow", None) is not None:
            wf = next((w for w in self.exp.system.workflows if w.name == src.workflow), None)
            if wf is None or wf.trigger is None:
                return None, f"workflow {src.workflow} has no trigger topic to publish to"
            return LiveSource(i, src.name, PUBLISH, src, topic=wf.trigger, attributes=(("workflow", wf.name),)), ""
        if src.flow is not None:
            steps = []
            for k, step in enumerate(src.flow.steps):
                kind = step.kind
                if kind == "think":
                    steps.append(LiveSource(i, src.name, "think", src, step=k, step_label=step.label or str(k + 1),
                                            think=step.think))
                    continue
                live, why = self._target(src, i, kind, getattr(step, kind))
                if live is None:
                    return None, f"step {k + 1}: {why}"
                steps.append(dataclasses.replace(live, step=k, step_label=step.label or str(k + 1),
                                                 capture=tuple(step.capture.items())))
            return LiveSource(i, src.name, FLOW, src, steps=tuple(steps)), ""
        kind = next(k for k in ("publish", "request", "firestore", "storage") if getattr(src, k) is not None)
        live, why = self._target(src, i, kind, getattr(src, kind))
        if live is not None:
            live = dataclasses.replace(live, capture=tuple(src.capture.items()))
        return live, why

    def _target(self, src: Any, i: int, kind: str, spec: Any) -> tuple[LiveSource | None, str]:
        if kind == "publish":
            return LiveSource(i, src.name, PUBLISH, src, topic=spec.topic, attributes=tuple(sorted(spec.attributes.items())),
                              spec=spec), ""
        if kind == "firestore":
            return LiveSource(i, src.name, FIRESTORE, src, service=FIRESTORE_ENDPOINT, route=f"firestore.{spec.collection}",
                              spec=spec), ""
        if kind == "storage":
            return LiveSource(i, src.name, STORAGE, src, service=STORAGE_ENDPOINT, route=f"storage.{spec.bucket}",
                              spec=spec), ""
        route = next((r for r in self.exp.routes(spec.service) if r.name == spec.route), None)
        if route is None:
            return None, f"service {spec.service} has no route {spec.route}"
        return LiveSource(i, src.name, REQUEST, src, service=spec.service, route=spec.route, method=route.method,
                          path=route.path, spec=spec), ""

    def source(self, name: str) -> LiveSource:
        return next(s for s in self.sources if s.name == name)

    def groups(self) -> dict[str, list[LiveSource]]:
        out: dict[str, list[LiveSource]] = {}
        for s in self.sources:
            out.setdefault(s.group, []).append(s)
        return out

    def sends(self, with_prepare: bool = True) -> list[LiveSource]:
        """Every sending LiveSource: the sources (a flow's steps in its place) and the prepare entries'."""
        out = []
        for s in self.sources + (self.prepare if with_prepare else []):
            out += list(s.steps) if s.action == FLOW else [s]
        return out

    def services(self) -> list[str]:
        """The system's services the sources (and prepare entries) send requests to."""
        return sorted({s.service for s in self.sends() if s.action == REQUEST})

    def emulators(self) -> list[str]:
        """Endpoint keys of the emulators firestore / storage sources write to."""
        return sorted({s.service for s in self.sends() if s.action in (FIRESTORE, STORAGE)})

    def topics(self) -> list[str]:
        return sorted({s.topic for s in self.sends() if s.topic})

    def cover_count(self, name: str, duration_s: float | None = None) -> int:
        """`count: {cover: name}`: the source's expected sends over the run (the first
        duration_s wall seconds) plus three standard deviations (Poisson)."""
        src = next((s for s in self.all_sources if s.name == name), None)
        if src is None:
            raise ValueError(f"count: cover: {name!r} is not a live source of {self.scenario_path.name}")
        end = self.duration_s if duration_s is None else min(duration_s, self.duration_s)
        mean = self.expected_count(src, 0.0, end)
        return int(math.ceil(mean + 3.0 * math.sqrt(mean))) if mean > 0 else 0

    def prepare_count(self, entry: LiveSource, duration_s: float | None = None) -> int:
        count = entry.source.count
        return int(count) if isinstance(count, int) else self.cover_count(count.cover, duration_s)

    # ---- rates -------------------------------------------------------------------------

    def wall_rate(self, source: LiveSource, wall_t: float) -> float:
        """Sends per wall second of `source` at wall time wall_t (seconds since the start)."""
        return traffic.source_rate(self.exp, source.source, wall_t * self.time_scale) * self.scale_of(source)

    def wall_rate_series(self, source: LiveSource, dt_wall: float, n: int) -> np.ndarray:
        """Wall rates at the midpoints of n wall steps of dt_wall (`rate_series`, compressed)."""
        return traffic.rate_series(self.exp, source.source, 0.0, dt_wall * self.time_scale, n) * self.scale_of(source)

    def total_rate(self, wall_t: float, sources: Iterable[LiveSource] | None = None) -> float:
        return sum(self.wall_rate(s, wall_t) for s in (self.sources if sources is None else sources))

    def peak_rate(self, source: LiveSource, step_s: float = 1.0) -> float:
        n = max(1, int(math.ceil(self.duration_s / step_s)))
        return float(self.wall_rate_series(source, step_s, n).max())

    def expected_count(self, source: LiveSource, w0: float = 0.0, w1: float | None = None) -> float:
        """Mean number of sends of `source` in wall [w0, w1)."""
        w1 = self.duration_s if w1 is None else w1
        n = max(1, int(math.ceil((w1 - w0) * self.time_scale / 60.0)))
        dt = (w1 - w0) * self.time_scale / n
        return float(traffic.expected_counts(self.thinned(self.scale_of(source)), source.source, w0 * self.time_scale, dt, n).sum())

    def waves_wall(self) -> list[dict]:
        """Each wave's wall-clock window: name, start_s, end_s."""
        return [{"name": w.name, "start_s": w.at / self.time_scale, "end_s": (w.at + w.duration) / self.time_scale}
                for w in self.exp.scenario.traffic.waves]

    # ---- schedules ---------------------------------------------------------------------

    def arrivals(self, source: LiveSource, w0: float, w1: float, rng: np.random.Generator) -> np.ndarray:
        """Intended send times (wall seconds from the start) of `source` in [w0, w1): the
        simulator's NHPP on the thinned scenario, compressed by time_scale."""
        t = traffic.arrival_times(self.thinned(self.scale_of(source)), source.source, w0 * self.time_scale, w1 * self.time_scale, rng,
                                  cell=max(1.0, self.time_scale / 4.0))
        return t / self.time_scale

    def timetable(self, sources: Iterable[LiveSource] | None = None, *, duration_s: float | None = None,
                  chunk_s: float = 2.0, seed_offset: int = 0, share: tuple[int, int] = (0, 1)) -> "Timetable":
        return Timetable(self, list(self.sources if sources is None else sources),
                         self.duration_s if duration_s is None else min(duration_s, self.duration_s),
                         chunk_s=chunk_s, seed=self.seed + seed_offset, share=share)

    def scales(self) -> dict[str, float]:
        return {"time_scale": self.time_scale, "rate_scale": self.rate_scale}


class Timetable:
    """The merged, time-ordered schedule of several sources, drawn lazily `chunk_s` wall
    seconds at a time (a 3-hour scenario at full rate never sits in memory at once).

    Each source draws from its own seeded stream (seed, source index): a source's schedule
    does not depend on which other sources share the timetable.
    Clock-agnostic: callers pass `now` (wall seconds since the start) and wait themselves.

    share (k, n): this timetable keeps every n-th send starting at the k-th, of the schedule
    every share draws identically: n load-generator processes with shares (0, n) .. (n-1, n)
    send exactly the sends one process would (Locust workers, loadtests/locust_users.py)."""

    def __init__(self, plan: LivePlan, sources: list[LiveSource], duration_s: float, *, chunk_s: float = 2.0,
                 seed: int = 0, share: tuple[int, int] = (0, 1)):
        if not 0 <= share[0] < share[1]:
            raise ValueError(f"share {share}: want (k, n) with 0 <= k < n")
        self.share = share
        self.plan = plan
        self.sources = sources
        self.duration_s = float(duration_s)
        self.chunk_s = float(chunk_s)
        self._rngs = {s.index: np.random.default_rng([seed, s.index]) for s in sources}
        self._heap: list[tuple[float, int, int]] = []
        self._drawn_to = 0.0
        self._seq = 0
        self.scheduled: dict[str, int] = {s.name: 0 for s in sources}
        self._by_index = {s.index: s for s in sources}

    def _fill(self, until: float) -> None:
        while self._drawn_to < min(until, self.duration_s):
            w0 = self._drawn_to
            w1 = min(w0 + self.chunk_s, self.duration_s)
            for s in self.sources:
                times = self.plan.arrivals(s, w0, w1, self._rngs[s.index])
                k, n = self.share
                for t in times:
                    if self._seq % n == k:
                        heapq.heappush(self._heap, (float(t), self._seq, s.index))
                        self.scheduled[s.name] += 1
                    self._seq += 1
            self._drawn_to = w1

    def next_time(self) -> float | None:
        """The earliest pending intended time, None when the schedule is exhausted."""
        while not self._heap and self._drawn_to < self.duration_s:
            self._fill(self._drawn_to + self.chunk_s)
        if not self._heap:
            return None
        self._fill(self._heap[0][0])
        return self._heap[0][0]

    def pop_due(self, now: float, limit: int | None = None) -> list[tuple[float, LiveSource]]:
        """Every send whose intended time is <= now (oldest first, at most `limit`)."""
        self._fill(now + 1e-9)
        out: list[tuple[float, LiveSource]] = []
        while self._heap and self._heap[0][0] <= now and (limit is None or len(out) < limit):
            t, _, idx = heapq.heappop(self._heap)
            out.append((t, self._by_index[idx]))
        return out

    def done(self) -> bool:
        return self.next_time() is None

    def all_times(self) -> list[tuple[float, LiveSource]]:
        """The whole schedule at once (tests, benchmarks)."""
        return self.pop_due(self.duration_s)


# ---- where to send -----------------------------------------------------------------------

PUBSUB = "pubsub"
PROJECT = "project"
EMULATOR_VARS = {FIRESTORE_ENDPOINT: "FIRESTORE_EMULATOR_HOST", STORAGE_ENDPOINT: "STORAGE_EMULATOR_HOST"}


def url_env_var(service: str) -> str:
    """COMMAND_URL for service `command`, APP_URL for `app`, EVENT_PUBLISHER_URL, ..."""
    return service.upper().replace("-", "_") + "_URL"


def emulator_endpoints(env: dict[str, str]) -> dict[str, str]:
    """{firestore_emulator / storage_emulator: base URL} from FIRESTORE_ / STORAGE_EMULATOR_HOST."""
    return {key: "http://" + env[var].removeprefix("http://").rstrip("/")
            for key, var in EMULATOR_VARS.items() if env.get(var)}


def endpoints_from_env(plan: LivePlan, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Endpoints from the environment: `<SERVICE>_URL` per service, PUBSUB_EMULATOR_HOST,
    and the project (GOOGLE_CLOUD_PROJECT, else the system file's)."""
    import os

    env = os.environ if environ is None else environ
    out = {s: env[url_env_var(s)] for s in plan.services() if env.get(url_env_var(s))}
    if env.get("PUBSUB_EMULATOR_HOST"):
        out[PUBSUB] = env["PUBSUB_EMULATOR_HOST"]
    out.update(emulator_endpoints(env))
    out[PROJECT] = env.get("GOOGLE_CLOUD_PROJECT") or env.get("PUBSUB_PROJECT_ID") or plan.exp.system.project
    return out


def missing_endpoints(plan: LivePlan, endpoints: dict[str, str]) -> list[str]:
    need = [url_env_var(s) for s in plan.services() if s not in endpoints]
    if plan.topics() and PUBSUB not in endpoints:
        need.append("PUBSUB_EMULATOR_HOST")
    need += [EMULATOR_VARS[k] for k in plan.emulators() if k not in endpoints]
    return need
