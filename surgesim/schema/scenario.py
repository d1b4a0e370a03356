"""The scenario: traffic, faults on a timeline, SLOs, duration, and live-mode scales.

Timeline values (`at`, `duration`) are offsets from the scenario's start; curves are in
clock time, and `start_clock` says which clock time the run starts at."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from surgesim.schema.common import (
    Clock,
    Duration,
    Fraction,
    LatencySpec,
    PositiveInt,
    PubSubName,
    Rate,
    ServiceId,
    Strict,
    format_duration,
    in_range,
    parse_duration,
)
from surgesim.schema.limits import MAX_POISON


HOOK_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
Template = Any
"""Any YAML value; its strings may hold Jinja2 `{{ ... }}` expressions (docs/loadtests.md,
"Payload templates"). A string that is one `{{ expression }}` alone keeps the expression's
type (a number stays a number); any other string renders to text."""


class FilePart(Strict):
    """One file of a multipart body: `file` (a path relative to the scenario file, read once)
    or `content` (a template rendered per send)."""

    file: str | None = None
    content: str | None = None
    filename: str | None = None
    """Template; default: the file's name, else the field's."""
    content_type: str = "application/octet-stream"

    @model_validator(mode="after")
    def _one(self) -> "FilePart":
        if (self.file is None) == (self.content is None):
            raise ValueError("a file part needs exactly one of file or content")
        return self


class Publish(Strict):
    """A message per arrival. With `json`, `data` or `hook` the message is the rendered
    template; without, a fleet's pings (kind fleet) or a small generated JSON."""

    topic: PubSubName
    attributes: dict[str, str] = Field(default_factory=dict)
    """Templates."""
    message_bytes: Annotated[int, in_range(1, 10_000_000)] | None = None
    """Overrides the topic's average size for this source."""
    json_: Template = Field(None, alias="json")
    """The message data as JSON: any YAML value, templated."""
    data: str | None = None
    """The message data as text (a template), sent UTF-8 encoded."""
    ordering_key: str | None = None
    """Template."""
    hook: str | None = Field(None, pattern=HOOK_PATTERN)
    """`module:function` called with a PayloadContext; returns the data (dict/list: JSON;
    str/bytes: as is). The module is imported from the scenario's folder."""

    @model_validator(mode="after")
    def _one_body(self) -> "Publish":
        given = [k for k in ("json", "data", "hook") if getattr(self, "json_" if k == "json" else k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of json, data, hook; got {', '.join(given)}")
        return self

    @property
    def templated(self) -> bool:
        return (self.json_ is not None or self.data is not None or self.hook is not None
                or self.ordering_key is not None or any("{" in v for v in self.attributes.values()))


class Request(Strict):
    """An HTTP request per arrival to a route of a service. With any of `json`, `form`/`files`,
    `body`, `hook`, `path_params`, `query` or `headers` the request is rendered from these
    templates; with none, the generator's built-in request for the route."""

    service: ServiceId
    route: str
    path_params: dict[str, Template] = Field(default_factory=dict)
    """Values for the route path's `{placeholders}` (templates)."""
    query: dict[str, Template] = Field(default_factory=dict)
    """Query string parameters (templates)."""
    headers: dict[str, Template] = Field(default_factory=dict)
    """Templates; `X-Intended-Time` is always added."""
    json_: Template = Field(None, alias="json")
    """The body as JSON: any YAML value, templated."""
    form: dict[str, Template] | None = None
    """multipart/form-data fields (templates); with `files`."""
    files: dict[str, FilePart] | None = None
    """multipart/form-data files by field name."""
    body: str | None = None
    """A raw body (a template), sent with `content_type`."""
    content_type: str | None = None
    """Content-Type of `body` or of a hook's str/bytes (default text/plain / application/octet-stream)."""
    hook: str | None = Field(None, pattern=HOOK_PATTERN)
    """`module:function` called with a PayloadContext; returns the body (dict/list: JSON;
    str/bytes: raw with content_type). The module is imported from the scenario's folder."""

    @model_validator(mode="after")
    def _one_body(self) -> "Request":
        given = [k for k, v in (("json", self.json_), ("form/files", self.form or self.files), ("body", self.body),
                                ("hook", self.hook)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give one body: json, form/files, body or hook; got {', '.join(given)}")
        if self.content_type is not None and self.body is None and self.hook is None:
            raise ValueError("content_type goes with body or hook")
        return self

    @property
    def templated(self) -> bool:
        return any(v is not None for v in (self.json_, self.form, self.files, self.body, self.hook)) or bool(
            self.path_params or self.query or self.headers)


class FirestoreWrite(Strict):
    """A document write per arrival through the Firestore emulator, as a client app (a mobile
    app, a web page) writes directly; a trigger on the collection sees it as the cloud's
    would. Latency is measured from the intended time to the emulator's answer."""

    collection: str = Field(pattern=r"^[^/{}]+$")
    document: str | None = None
    """The document id (a template); default: a 20-character id from the seeded stream."""
    op: Literal["create", "set", "update", "delete"] = "set"
    """create fails if the document exists; set replaces it; update changes the given fields
    of an existing one; delete removes it."""
    data: Template = None
    """The document's fields: a mapping, templated (not for delete)."""

    @model_validator(mode="after")
    def _data(self) -> "FirestoreWrite":
        if self.op == "delete" and self.data is not None:
            raise ValueError("op: delete takes no data")
        if self.op != "delete" and not isinstance(self.data, dict):
            raise ValueError(f"op: {self.op} needs data: a mapping of the document's fields")
        if self.op in ("update", "delete") and self.document is None:
            raise ValueError(f"op: {self.op} needs document: the id of an existing document")
        return self

    @property
    def templated(self) -> bool:
        return True


class StorageWrite(Strict):
    """An object upload per arrival through the Storage emulator."""

    bucket: str
    object: str
    """The object name (a template), e.g. `uploads/{{ uuid }}.jpg`."""
    content_type: str = "application/octet-stream"
    bytes: Annotated[int, in_range(0, 100_000_000)] | None = None
    """Upload this many bytes from the seeded stream."""
    file: str | None = None
    """Upload this file (relative to the scenario, read once)."""

    @model_validator(mode="after")
    def _content(self) -> "StorageWrite":
        if (self.bytes is None) == (self.file is None):
            raise ValueError("a storage source needs exactly one of bytes or file")
        return self

    @property
    def templated(self) -> bool:
        return True


SOURCE_TARGETS = ("publish", "request", "job", "workflow", "firestore", "storage", "flow")
STEP_KINDS = ("request", "publish", "firestore", "storage", "think")
PoolName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
CAPTURE_PATTERN = r"^(header:[A-Za-z0-9!#$%&'*+.^_`|~-]+|\$.*)$"
Captures = dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Annotated[str, Field(pattern=CAPTURE_PATTERN)]]
"""Variable name: `$.json.path` into the JSON answer (jsonpath-ng syntax, first match) or
`header:Name` (a response header)."""


class FlowStep(Strict):
    """One step of a flow: a request, publish, Firestore write or Storage upload (the source
    kinds' own schema, templated with the flow's variables), or a `think:` pause."""

    label: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$")
    """The step's latency histogram: `flow/<source>.<label>` (default: the step's number)."""
    capture: Captures = Field(default_factory=dict)
    """Values from the step's answer, by name, for the later steps (and `put:`)."""
    request: Request | None = None
    publish: Publish | None = None
    firestore: FirestoreWrite | None = None
    storage: StorageWrite | None = None
    think: LatencySpec | None = None
    """A pause before the next step: a duration (`2s`) or a distribution (`{dist: exponential, mean: 3s}`)."""

    @model_validator(mode="after")
    def _one(self) -> "FlowStep":
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a flow step is exactly one of {', '.join(STEP_KINDS)}; got {', '.join(kinds) or 'none'}")
        if self.think is not None and self.capture:
            raise ValueError("a think step has no answer to capture from")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)


class Flow(Strict):
    """A user journey: each arrival runs the steps in order; a failed step aborts the flow
    (counted per flow and step)."""

    steps: list[FlowStep] = Field(min_length=1)

    @property
    def think_means(self) -> list[float]:
        """Per step, the mean pause before it (the sum of the think steps before it)."""
        out, t = [], 0.0
        for step in self.steps:
            out.append(t)
            if step.think is not None:
                t += float(step.think.mean if step.think.mean is not None else step.think.p50)
        return out


class Sending(Strict):
    """What a source and a `prepare:` entry share: the target, its templates' variables, and
    the pools that connect sources (docs/your-system.md, "Flows, pools and prepare")."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    publish: Publish | None = None
    request: Request | None = None
    firestore: FirestoreWrite | None = None
    storage: StorageWrite | None = None
    flow: Flow | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    """Static values the source's templates use by name (`{{ region }}`)."""
    locale: str | list[str] = "en_US"
    """Faker locale(s) of the templates' `faker`."""
    let: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Template] = Field(default_factory=dict)
    """Per-arrival variables, rendered in order before the payload (each sees the ones before
    it), e.g. `order_id: "O{{ run }}{{ '%06d' % seq }}"`; they travel with the item put."""
    put: PoolName | None = None
    """On a 2xx answer the arrival's item (taken variables + let + captures) goes into this pool."""
    capture: Captures = Field(default_factory=dict)
    """Values from the answer, by name, into the item put."""

    @property
    def pool_names(self) -> set[str]:
        """The variables an item this source puts carries (its let, captures, flow captures)."""
        names = set(self.let) | set(self.capture)
        if self.flow is not None:
            for step in self.flow.steps:
                names |= set(step.capture)
        return names


def pool_variables(sendings: list["Source | Prepare"]) -> dict[str, set[str]]:
    """Per pool, the variables its items carry: the let and captures of every source and
    prepare entry that puts into it, plus what those took from their own pools."""
    out: dict[str, set[str]] = {}
    changed = True
    while changed:  # a fixpoint: a chain of pools passes variables along
        changed = False
        for s in sendings:
            if s.put is None:
                continue
            names = s.pool_names | (out.get(s.take, set()) if s.take else set())
            if not names <= out.get(s.put, set()):
                out[s.put] = out.get(s.put, set()) | names
                changed = True
    return out


class Cover(Strict):
    """`count: {cover: SOURCE}`: as many as SOURCE's expected arrivals over the live run plus
    three standard deviations (Poisson), so its takes are not starved."""

    cover: str


class Prepare(Sending):
    """An entry of the `prepare:` phase: `count` sends before the clock starts, unmeasured,
    to seed state (e.g. documents a later source's commands need), optionally put into a pool."""

    count: Annotated[int, Field(strict=True), in_range(0, 10_000_000)] | Cover

    @model_validator(mode="before")
    @classmethod
    def _no_take(cls, data: Any) -> Any:
        if isinstance(data, dict) and "take" in data:
            raise ValueError("a prepare entry makes items; it takes none (take:)")
        return data

    @model_validator(mode="after")
    def _one(self) -> "Prepare":
        targets = [n for n in ("publish", "request", "firestore", "storage", "flow") if getattr(self, n) is not None]
        if len(targets) != 1:
            raise ValueError(f"a prepare entry sends exactly one of publish, request, firestore, storage, flow; "
                             f"got {', '.join(targets) or 'none'}")
        return self

    @property
    def take(self) -> None:
        """Prepare entries take from no pool (they run before any source has put)."""
        return None

    @property
    def firestore_only(self) -> bool:
        return self.firestore is not None


class Source(Sending):
    """An open-model arrival stream: arrivals do not slow down when the system does.

    kind fleet: `vehicles` each publishing every `ping_interval` (rate = vehicles / interval,
    keyed by vehicleId). kind rate: `rate` per second or `per_day` spread over the day by the
    curve. kind once: a single action `at` an offset (e.g. start a job). kind schedule: a
    job started at each time a unix-cron `schedule` names (Cloud Scheduler -> Cloud Run Jobs;
    given `schedule:`, kind schedule is implied)."""

    kind: Literal["fleet", "rate", "once", "schedule"] = "rate"
    take: PoolName | None = None
    """Each arrival takes the oldest item of this pool (its variables are in the templates'
    context); an arrival that finds the pool empty is not sent: it is counted `starved`."""
    vehicles: PositiveInt | None = None
    ping_interval: Annotated[Duration, in_range(0.1, 3600, "s")] | None = None
    rate: Rate | None = None
    per_day: Annotated[float, in_range(0, 1e11)] | None = None
    at: Duration | None = None
    curve: str | None = None
    """A curve named under traffic.curves; rates follow it (per_day totals are kept)."""
    arrivals: Literal["poisson", "periodic"] = "poisson"
    job: ServiceId | None = None
    workflow: ServiceId | None = None
    schedule: str | None = None
    """kind schedule: when Cloud Scheduler starts the `job`, in unix-cron on the scenario's
    clock (start_clock + t), e.g. `*/30 * * * *` or `0 2 * * *`; the date fields must be `*`
    (surgesim/cron.py). Live, the harness starts each execution when the scenario clock
    (wall × time_scale) gets there."""
    rate_scale: Annotated[float, in_range(1e-6, 1)] | None = None
    """Live mode: this source's own fraction of its volume sent for real, instead of
    scenario.live.rate_scale (thin telemetry more than commands)."""

    @model_validator(mode="before")
    @classmethod
    def _scheduled(cls, data: Any) -> Any:
        # `{name, job, schedule}` is how a Cloud Scheduler job reads; kind would only repeat it
        if isinstance(data, dict) and data.get("schedule") is not None and "kind" not in data:
            return {**data, "kind": "schedule"}
        return data

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from surgesim.cron import parse

            parse(value)  # CronError is a ValueError: reported at traffic.sources.N.schedule
        return value

    @model_validator(mode="after")
    def _complete(self) -> "Source":
        targets = [n for n in SOURCE_TARGETS if getattr(self, n) is not None]
        if len(targets) != 1:
            raise ValueError(f"a source sends to exactly one of {', '.join(SOURCE_TARGETS)}; got {', '.join(targets) or 'none'}")
        if self.kind == "fleet":
            if self.vehicles is None or self.ping_interval is None:
                raise ValueError("kind: fleet needs vehicles and ping_interval")
            if self.rate is not None or self.per_day is not None:
                raise ValueError("kind: fleet takes vehicles and ping_interval, not rate or per_day")
        elif self.kind == "rate":
            if (self.rate is None) == (self.per_day is None):
                raise ValueError("kind: rate needs exactly one of rate or per_day")
        elif self.kind == "schedule":
            if self.schedule is None or self.job is None:
                raise ValueError("kind: schedule starts a Cloud Run job: it needs `job` and `schedule` "
                                 "(e.g. {name: nightly, job: backfill, schedule: '0 2 * * *'})")
            if self.at is not None:
                raise ValueError("kind: schedule takes its times from `schedule`, not `at`")
        elif self.at is None:
            raise ValueError("kind: once needs `at`")
        if self.schedule is not None and self.kind != "schedule":
            raise ValueError(f"`schedule` goes with kind: schedule (this source is kind: {self.kind})")
        if (self.take or self.put or self.let or self.capture) and (self.job or self.workflow):
            raise ValueError("let, take, put and capture go with request, publish, firestore, storage or flow sources")
        if self.capture and self.put is None:
            raise ValueError("capture: goes with put: (a flow's steps capture for the steps after them)")
        return self

    @property
    def base_rate(self) -> float:
        """Mean arrivals per second before curve, waves and multiplier."""
        if self.kind == "fleet":
            return self.vehicles / self.ping_interval
        if self.kind == "rate":
            return self.rate if self.rate is not None else self.per_day / 86400.0
        return 0.0

    def start_times(self, start_clock: float, duration: float) -> list[float]:
        """A once or schedule source's actions in scenario seconds within [0, duration):
        its `at`, or each time its `schedule` names (both engines start jobs from this)."""
        if self.kind == "schedule":
            from surgesim.cron import fire_times

            return fire_times(str(self.schedule), start_clock, duration)
        if self.kind == "once" and self.at is not None and self.at < duration:
            return [float(self.at)]
        return []


def _curve_points(value: Any) -> Any:
    if isinstance(value, dict):
        return [[k, v] for k, v in value.items()]
    return value


class Curve(Strict):
    """Rate multiplier over the clock day, linear between points, wrapping at midnight."""

    points: Annotated[list[tuple[Clock, Annotated[float, in_range(0, 1000)]]],
                      BeforeValidator(_curve_points), Field(min_length=1)]

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        # A curve is written as a mapping of clock time to multiplier: {"06:00": 0.3, ...}
        if isinstance(data, dict) and "points" not in data:
            return {"points": data}
        if isinstance(data, list):
            return {"points": data}
        return data

    def at(self, clock_seconds: float) -> float:
        pts = sorted(self.points)
        t = clock_seconds % 86400.0
        prev_t, prev_v = pts[-1][0] - 86400.0, pts[-1][1]
        for pt, pv in pts + [(pts[0][0] + 86400.0, pts[0][1])]:
            if t <= pt:
                if pt == prev_t:
                    return pv
                return prev_v + (pv - prev_v) * (t - prev_t) / (pt - prev_t)
            prev_t, prev_v = pt, pv
        return pts[-1][1]

    def mean(self) -> float:
        return sum(self.at(s) for s in range(0, 86400, 60)) / 1440.0


class Wave(Strict):
    """A surge: for `duration` from `at`, the named sources run at these absolute rates
    (or, with `multiply`, at their rate times the factor), ramping linearly over `ramp`."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    at: Duration
    duration: Annotated[Duration, in_range(1, 7 * 86400, "s")]
    ramp: Duration = 0.0
    rates: dict[str, Rate] = Field(default_factory=dict)
    multiply: dict[str, Annotated[float, in_range(0, 1000)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _something(self) -> "Wave":
        if not self.rates and not self.multiply:
            raise ValueError("a wave needs `rates` or `multiply` for at least one source")
        return self

    def event(self) -> dict:
        """The wave as the run directory's faults.json lists it, in both engines."""
        return {"kind": "wave", "target": ",".join(sorted(set(self.rates) | set(self.multiply))),
                "start_s": self.at, "end_s": self.at + self.duration,
                "details": {"name": self.name, "ramp_s": self.ramp, "rates": dict(self.rates),
                            "multiply": dict(self.multiply)}}


class Traffic(Strict):
    multiplier: Annotated[float, in_range(0, 1000)] = 1.0
    """Scales every source: 4.0 rehearses 4x baseline."""
    curves: dict[str, Curve] = Field(default_factory=dict)
    sources: list[Source] = Field(min_length=1)
    waves: list[Wave] = Field(default_factory=list)


FaultKind = Literal[
    "dependency_latency", "dependency_errors", "dependency_outage",
    "consumer_down", "poison_message", "bad_deploy", "emulator_restart",
    "job_task_crash", "job_task_hang", "bigquery_job_failure", "bigquery_job_slow",
]
_FAULT_NEEDS: dict[str, tuple[str, ...]] = {
    "dependency_latency": ("target", "latency"),
    "dependency_errors": ("target", "error_rate"),
    "dependency_outage": ("target",),
    "consumer_down": ("target",),
    "poison_message": ("topic",),
    "bad_deploy": ("target", "matching"),
    "emulator_restart": (),
    "job_task_crash": ("target",),
    "job_task_hang": ("target",),
    "bigquery_job_failure": (),
    "bigquery_job_slow": ("latency",),
}


_FAULT_DEFAULTS_SHOWN: dict[str, tuple[str, ...]] = {
    "poison_message": ("count",), "bad_deploy": ("replay",),
    "job_task_crash": ("count",), "job_task_hang": ("count",),
}
"""Settings a kind reads with a default, shown in faults.json even when left out."""


class Fault(Strict):
    kind: FaultKind
    at: Duration
    duration: Duration | None = None
    """None: until the end of the run (poison_message is instantaneous)."""
    target: ServiceId | None = None
    """An external API (dependency_*) or a service (consumer_down, bad_deploy;
    bigquery_job_failure / bigquery_job_slow: the service whose jobs fail / run long,
    default every service with a `bigquery: {op: job}` step)."""
    latency: LatencySpec | None = None
    """dependency_latency: the API's latency in the window (live: wall seconds, as any
    request's); bigquery_job_slow: the run time added to each BigQuery job inserted in the
    window, on the scenario clock like the job step's own duration (live: / time_scale)."""
    ramp: Annotated[Duration, in_range(0, 7 * 86400, "s")] = 0.0
    """dependency_latency: the API slows gradually: over `ramp` from the window's start each
    call's latency is (1 - w) x a draw of the API's own latency + w x a draw of `latency`,
    w rising linearly from 0 to 1 (then `latency` until the window ends). Live: the fake's
    p50 and p99 move the same way, updated at most every half wall second. 0: at once."""
    error_rate: Fraction | None = None
    """dependency_errors: the share of calls that fail; bigquery_job_failure: the share of
    BigQuery jobs inserted in the window that end DONE with an errorResult (default 1)."""
    topic: PubSubName | None = None
    count: Annotated[int, Field(strict=True), in_range(1, MAX_POISON)] = 1
    attributes: dict[str, str] = Field(default_factory=lambda: {"poison": "true"})
    matching: str | None = None
    """bad_deploy: a Pub/Sub filter; the bad version raises on messages it matches."""
    replay: bool = False
    """bad_deploy: at the fix, seek the subscription back to the deploy and re-drive the DLQ."""
    task: Annotated[int, Field(strict=True), in_range(0, 10_000)] | None = None
    """job_task_crash / job_task_hang: only this task index (CLOUD_RUN_TASK_INDEX); default any.
    The fault hits the first `count` task attempts of job `target` that start in its window."""
    after: Annotated[Duration, in_range(0, 86400, "s")] | None = None
    """job_task_crash: the attempt is killed (SIGKILL, exit -9) this long after it started
    (default 0: at once); job_task_hang: it stops making progress (SIGSTOP) this long after
    it started (default 0), so its job's task_timeout ends it. Seconds of the task's own
    clock, like task_timeout (not scaled by live.time_scale)."""

    @model_validator(mode="after")
    def _fields_for_kind(self) -> "Fault":
        missing = [f for f in _FAULT_NEEDS[self.kind] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"{self.kind} needs {', '.join(missing)}")
        if self.ramp and self.kind != "dependency_latency":
            raise ValueError(f"ramp: only dependency_latency ramps (not {self.kind})")
        if self.ramp and self.duration is not None and self.ramp > self.duration:
            raise ValueError(f"ramp: {format_duration(self.ramp)} is longer than the fault's duration "
                             f"({format_duration(self.duration)})")
        if self.matching is not None:
            from surgesim.pubsub_filter import FilterSyntaxError, parse_filter

            try:
                parse_filter(self.matching)
            except FilterSyntaxError as exc:
                raise ValueError(f"matching: invalid filter: {exc}") from None
        return self

    @property
    def end(self) -> float | None:
        return None if self.duration is None else self.at + self.duration

    def details(self, instant: bool) -> dict:
        """What faults.json shows of the fault's settings (sim and live alike): what its kind
        reads, whether written or left at the default, and whatever else the file set; an
        instant kind's attributes too."""
        d: dict = {}
        for k in ("latency", "error_rate", "topic", "count", "matching", "replay", "task", "after"):
            v = getattr(self, k)
            if k not in self.model_fields_set and k not in _FAULT_NEEDS[self.kind] \
                    and k not in _FAULT_DEFAULTS_SHOWN.get(self.kind, ()):
                continue
            if v is not None:
                d[k] = v.model_dump(exclude_none=True) if hasattr(v, "model_dump") else v
        if self.ramp:
            d["ramp_s"] = self.ramp
        if instant:
            d["attributes"] = dict(self.attributes)
        return d


SLO_FUNCS = ("p50", "p90", "p95", "p99", "p999", "max", "mean", "final", "total", "drain")
SLO_METRICS = ("latency", "lag", "backlog", "oldest_unacked", "dlq", "instances", "rejected", "errors",
               "wait", "pwait", "job", "freshness", "bigquery_job")
_SLO = re.compile(
    r"^\s*(?P<func>[a-z0-9]+)\(\s*(?P<metric>[a-z_]+)\.(?P<entity>[A-Za-z0-9._~%+-]+)\s*\)\s*"
    r"(?P<op><=|>=|==|<|>)\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?\s*$"
)


class Slo(Strict):
    """`FUNC(METRIC.ENTITY) OP VALUE[unit]`, e.g. `p99(latency.command.mark_delivered) < 100ms`,
    `drain(backlog.notification-sub) < 10m`, `final(dlq.eta-sub) == 0`.

    latency.SERVICE[.ROUTE] is HTTP accept latency; lag.SUBSCRIPTION is publish -> handler
    done; backlog / oldest_unacked / dlq are per subscription; instances / rejected / errors
    per service. drain is how long the backlog was up: from when it first rose above its level
    before the first fault or wave to when it was back there, whenever the fault ended.
    wait.SERVICE[.CHANNEL] is queueing delay (arrival to start on a slot; CHANNEL a route,
    subscription or trigger), e.g. `p99(wait.command) < 50ms`;
    pwait.SERVICE[.CHANNEL] the fraction of arrivals that waited: mean over the run, max /
    pXX / final over the histogram windows, e.g. `max(pwait.eta) < 0.2`.
    job.JOB is a Cloud Run Job's duration (its executions, first start to last end, in
    scenario seconds), e.g. `max(job.embed-backfill) < 20m`; a job whose execution failed or
    never finished has none, and the SLO fails.
    freshness.COLLECTION (simulator) is the age of the newest message each keyed document of
    a collection declared with `freshness: true` shows when read, e.g.
    `p99(freshness.LiveMap) < 15s`.
    bigquery_job.SERVICE is the run time of each BigQuery job the service's `bigquery: {op:
    job}` step inserted (jobs.insert -> DONE, scenario seconds; live, the BigQuery job
    clock's), e.g. `p90(bigquery_job.relay-start) < 20m`."""

    text: str
    func: str
    metric: str
    entity: str
    op: str
    threshold: float
    """Seconds when the value had a time unit, else a count."""

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            m = _SLO.match(data)
            if not m:
                raise ValueError(
                    f"expected FUNC(METRIC.ENTITY) OP VALUE such as 'p99(latency.command) < 100ms', got {data!r}"
                )
            if m["func"] not in SLO_FUNCS:
                raise ValueError(f"unknown function {m['func']!r}; one of {', '.join(SLO_FUNCS)}")
            if m["metric"] not in SLO_METRICS:
                raise ValueError(f"unknown metric {m['metric']!r}; one of {', '.join(SLO_METRICS)}")
            value = parse_duration(m["value"] + m["unit"]) if m["unit"] else float(m["value"])
            return {"text": data.strip(), "func": m["func"], "metric": m["metric"],
                    "entity": m["entity"], "op": m["op"], "threshold": value}
        return data

    def holds(self, observed: float) -> bool:
        return {"<": observed < self.threshold, "<=": observed <= self.threshold,
                ">": observed > self.threshold, ">=": observed >= self.threshold,
                "==": observed == self.threshold}[self.op]


Reason = Annotated[str, Field(min_length=1, pattern=r"\S")]
NonNegInt = Annotated[int, Field(strict=True), in_range(0, 10**12)]


class ClientErrorsCheck(Strict):
    """Relaxes the implicit client-errors check (at most 1% of a route's answers, 429s aside,
    may be other than 2xx)."""

    max_share: Fraction | None = None
    """The share allowed on every route not named under `routes`."""
    routes: dict[str, Fraction] = Field(default_factory=dict)
    """SERVICE.ROUTE (or flow.SOURCE, a flow's own row): the share allowed on that route."""
    reason: Reason
    """Why this run may answer clients with errors; shown in the report beside the check."""


class AllowCheck(Strict):
    """Relaxes an implicit check that allows nothing by default, per entity, with a reason."""

    allow: dict[str, NonNegInt] = Field(min_length=1)
    """Name: how many are allowed (at most)."""
    reason: Reason
    """Why; shown in the report beside the check."""


class Checks(Strict):
    """Explicit relaxations of the implicit checks every run is judged on (docs/reports.md).
    Each needs a `reason`, which the report shows. A check not named here is judged strictly."""

    client_errors: ClientErrorsCheck | None = None
    dead_letters: AllowCheck | None = None
    """SUBSCRIPTION: dead letters allowed; for a subscription a bad_deploy targets, the number the
    fault is expected to dead-letter (required: the totals cannot give it), which must then be > 0."""
    lost: AllowCheck | None = None
    """SUBSCRIPTION: messages allowed to expire by retention; TRIGGER: deliveries allowed to be given up."""
    workflows: AllowCheck | None = None
    """WORKFLOW: executions allowed to end FAILED (a saga whose compensation may itself fail)."""
    jobs: AllowCheck | None = None
    """JOB: executions allowed to fail (live), e.g. a job
    whose tasks a declared fault crashes past max_retries."""


class Live(Strict):
    time_scale: Annotated[float, in_range(1, 3600)] = 1.0
    """Scenario seconds per wall second: 60 runs a 3-hour morning in 3 minutes."""
    rate_scale: Annotated[float, in_range(1e-6, 1)] = 1.0
    """Fraction of the scenario's volume sent for real, to fit this machine."""
    locust: bool = True
    sample_interval: Annotated[Duration, in_range(0.1, 60, "s")] = 1.0
    drain_timeout: Annotated[Duration, in_range(0, 3600, "s")] = 60.0
    """Wall seconds to wait after the traffic ends for backlogs to drain before the final check."""
    stock: Any = Field(None, exclude=True)
    """Removed: the warm-up is the scenario's top-level `prepare:` (naming it is an error)."""

    @field_validator("stock", mode="before")
    @classmethod
    def _removed(cls, value: Any) -> Any:
        if value is None:  # not given
            return None
        raise ValueError("removed; did you mean the top-level `prepare:`? (sends or Firestore documents before "
                         "the clock, their items put into pools: docs/your-system.md)")

    slos: list[Slo] | None = None
    """SLOs `surgesim live` judges instead of the scenario's `slos` (which `surgesim sim` keeps
    judging): thresholds this machine can show, e.g. a command-latency bound that only says the
    path never stalled where production's 100 ms is the local stack's load (docs/live.md)."""


class Scenario(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    system: str
    """Path of the system file, relative to this file."""
    plan: str | None = None
    """Path of the plan file, relative to this file; `--plan` overrides it."""
    seed: Annotated[int, Field(strict=True), in_range(0, 2**63 - 1)] = 1
    """Same seed, same simulator run, byte for byte."""
    start_clock: Clock = "00:00"
    """Clock time at the scenario's start ('06:00'): curves are evaluated in clock time."""
    duration: Annotated[Duration, in_range(1, 31 * 86400, "s")]
    """How long the scenario runs."""
    step: Annotated[Duration, in_range(0.001, 60, "s")] = 1.0
    """Simulator time step (arrivals are drawn and nodes process a step at a time) and metric windows."""
    traffic: Traffic
    faults: list[Fault] = Field(default_factory=list)
    """Faults on the timeline (offsets from the start)."""
    slos: list[Slo] = Field(default_factory=list)
    """Checked at the end; any failing SLO makes the run (and `surgesim sim/live`) exit 1."""
    checks: Checks = Field(default_factory=Checks)
    """Relaxations of the implicit checks (client errors, dead letters, losses), each with a reason."""
    live: Live = Field(default_factory=Live)
    prepare: list[Prepare] = Field(default_factory=list)
    """Sends before the clock starts, unmeasured, to seed state (live mode only; the simulator
    ignores them): Firestore documents, requests, publishes or flows, `count` of each."""
