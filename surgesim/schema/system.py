"""The system file: what exists. Topics, subscriptions, services, jobs, stores, triggers,
workflows and external APIs. Capacity knobs live in the plan, not here."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from surgesim.pubsub_filter import FilterSyntaxError, parse_filter
from surgesim.schema.common import (
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
)
from surgesim.schema.limits import MAX_FAN_OUT, MAX_JOB_BATCHES


class Topic(Strict):
    name: PubSubName
    message_bytes: Annotated[int, in_range(1, 10_000_000)] = 512
    """Average payload size: drives Pub/Sub cost and the BigQuery bridge's byte counts."""
    retention: Annotated[Duration, in_range(600, 31 * 86400, "s")] | None = None
    """Topic message retention (10m..31d); None keeps nothing beyond subscriptions."""


class RetryPolicy(Strict):
    min_backoff: Annotated[Duration, in_range(0, 600, "s")] = 10.0
    max_backoff: Annotated[Duration, in_range(0, 600, "s")] = 600.0

    @model_validator(mode="after")
    def _ordered(self) -> "RetryPolicy":
        if self.min_backoff > self.max_backoff:
            raise ValueError(f"min_backoff ({self.min_backoff:g}s) must be <= max_backoff ({self.max_backoff:g}s)")
        return self


class DeadLetter(Strict):
    topic: PubSubName
    max_attempts: Annotated[int, Field(strict=True), in_range(5, 100)] = 5


class BigQueryDelivery(Strict):
    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
    """`dataset.table`, declared under stores.bigquery."""
    write_metadata: bool = True
    """Add subscription_name, message_id, publish_time, data and attributes columns."""
    use_table_schema: bool = False
    """Map the message's JSON fields onto the table's columns (as Pub/Sub's option of that name)."""


def _check_filter(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a filter such as 'attributes.k = \"v\"', got {value!r}")
    if len(value.encode()) > 256:
        raise ValueError(f"must be at most 256 bytes (Pub/Sub's limit), got {len(value.encode())}")
    try:
        parse_filter(value)
    except FilterSyntaxError as exc:
        raise ValueError(f"invalid filter: {exc}") from None
    return value


_EMAIL = re.compile(r"^[a-z][a-z0-9-]{0,62}@[a-z0-9][a-z0-9.-]*\.[a-z]+$")


def _service_account(value: Any) -> str:
    if not isinstance(value, str) or not _EMAIL.match(value):
        raise ValueError(f"expected a service account email such as relay@my-project.iam.gserviceaccount.com, got {value!r}")
    return value


def _member(value: Any) -> str:
    if value in ("allUsers", "allAuthenticatedUsers"):
        return value
    kind, _, email = str(value).partition(":") if isinstance(value, str) else ("", "", "")
    if kind not in ("serviceAccount", "user") or not _EMAIL.match(email):
        raise ValueError("expected allUsers, allAuthenticatedUsers, serviceAccount:<email> or user:<email>, "
                         f"got {value!r}")
    return value


ServiceAccount = Annotated[str, BeforeValidator(_service_account)]
"""A service account's email, e.g. `relay-push@my-project.iam.gserviceaccount.com`."""
Member = Annotated[str, BeforeValidator(_member)]
"""An IAM member: `allUsers`, `allAuthenticatedUsers`, `serviceAccount:<email>` or `user:<email>`."""


class Subscription(Strict):
    name: PubSubName
    topic: PubSubName
    consumer: ServiceId | None = None
    """The service (or workflow) that handles each message; None for a holding subscription (a DLQ)."""
    delivery: Literal["pull", "push", "bigquery"] = "pull"
    """pull: the consumer pulls with flow control; push: Pub/Sub POSTs to the consumer; bigquery: rows written to a table."""
    filter: Annotated[str | None, BeforeValidator(_check_filter)] = None
    """Pub/Sub filter syntax, e.g. `attributes.eventType = "OrderShipped"`; non-matching messages are acked unseen."""
    ack_deadline: Annotated[Duration, in_range(10, 600, "s")] = 10.0
    """10s..600s: an unacked message is redelivered after this."""
    retry: RetryPolicy | None = None
    """None is Pub/Sub's default: redeliver immediately after a nack or expired deadline."""
    dead_letter: DeadLetter | None = None
    """Dead-letter topic and max delivery attempts (5..100)."""
    retention: Annotated[Duration, in_range(600, 7 * 86400, "s")] = 7 * 86400.0
    """10m..7d: unacked messages older than this are dropped."""
    push_path: str = Field("/", pattern=r"^/")
    """Path on the consumer service that push requests go to."""
    ordering: bool = False
    """Deliver messages with the same ordering key in order."""
    bigquery: BigQueryDelivery | None = None
    service_account: ServiceAccount | None = None
    """Push identity: each push carries an ID token for this account (`aud` the push
    endpoint); None: `<subscription>-push@<project>.iam.gserviceaccount.com`."""

    @model_validator(mode="after")
    def _delivery_consistent(self) -> "Subscription":
        if self.delivery == "bigquery" and self.bigquery is None:
            raise ValueError("delivery: bigquery needs a `bigquery: {table: dataset.table}` block")
        if self.delivery != "bigquery" and self.bigquery is not None:
            raise ValueError(f"a `bigquery` block needs delivery: bigquery, got delivery: {self.delivery}")
        if self.delivery == "push" and self.consumer is None:
            raise ValueError("delivery: push needs a consumer service to push to")
        return self


# ---- handler steps: what a service does per request or message ---------------------------


class FirestoreStep(Strict):
    op: Literal["read", "write", "transaction", "batch"] = "write"
    collection: str
    docs: Annotated[int, Field(strict=True), in_range(1, 500)] = 1
    """Documents per operation (Firestore's limit for a batch or transaction is 500)."""
    key: str | None = None
    """Attribute naming the document (e.g. vehicleId): writes to one key contend, and debounce groups by it."""
    debounce: bool = False
    """Coalesce writes per key to one per the plan's debounce interval for this service."""
    change: str | None = None
    """The change this write makes visible to triggers, carried as `eventType` (e.g. OrderShipped)."""


class CallStep(Strict):
    api: ServiceId
    timeout: Annotated[Duration, in_range(0.001, 3600, "s")] | None = None
    """1ms..1h; a call that takes longer fails at the timeout."""


class PublishStep(Strict):
    topic: PubSubName
    attributes: dict[str, str] = Field(default_factory=dict)
    """Values starting with `$` copy the incoming message's attribute (e.g. `$eventType`)."""
    count: Annotated[int, Field(strict=True), in_range(1, MAX_FAN_OUT)] = 1
    fraction: Fraction = 1.0
    """Publish for this fraction of handled messages only (e.g. the few pings that cross a geofence)."""
    delay: Duration = 0.0
    """Publish after this delay (Cloud Tasks / a scheduled re-message)."""


class BigQueryStep(Strict):
    op: Literal["insert", "query", "job"] = "insert"
    table: str | None = None
    rows: Annotated[int, Field(strict=True), in_range(1, 50_000)] = 1
    """Rows per operation (an insertAll request takes at most 50,000)."""
    duration: LatencySpec | None = None
    """For op: job, how long the BigQuery job runs before it is done."""


class StorageStep(Strict):
    bucket: str
    bytes: Annotated[int, in_range(1, 5 * 2**40)] = 200_000


class PollStep(Strict):
    """A status checker that re-messages itself every `every` until the job started earlier
    in the handler is done (the function relay's pattern)."""

    topic: PubSubName
    every: Annotated[Duration, in_range(1, 86400, "s")] = 60.0


class SqlStep(Strict):
    """One operation on a relational database (Cloud SQL) declared under `stores.sql`: it
    waits for a pooled connection, runs, and holds the connection until its writes are
    committed (docs/simulator.md, "Relational store")."""

    db: str
    op: Literal["read", "write", "transaction"] = "transaction"
    writes: Annotated[int, Field(strict=True), in_range(0, 1000)] = 1
    """Rows the operation writes (0 for a read); each takes its share of the database's write_capacity."""

    @model_validator(mode="after")
    def _reads_write_nothing(self) -> "SqlStep":
        if self.op == "read" and self.writes:
            raise ValueError(f"op: read writes nothing; set writes: 0 (got {self.writes}) or op: write/transaction")
        if self.op != "read" and not self.writes:
            raise ValueError(f"op: {self.op} writes at least one row (writes: 0 is op: read)")
        return self


class VectorStep(Strict):
    collection: str
    vectors: Annotated[int, Field(strict=True), in_range(1, 10_000)] = 1
    latency: LatencySpec = Field(default_factory=lambda: {"p50": 0.005})


_STEP_KINDS: dict[str, type[Strict] | None] = {
    "cpu": None,
    "firestore": FirestoreStep,
    "call": CallStep,
    "publish": PublishStep,
    "bigquery": BigQueryStep,
    "storage": StorageStep,
    "poll": PollStep,
    "vector": VectorStep,
    "sql": SqlStep,
    "sleep": None,
}


class Step(Strict):
    """Exactly one of the keys. `cpu` and `sleep` take a latency (`cpu: 3ms` or
    `cpu: {p50: 3ms, p99: 12ms}`): cpu holds an instance's concurrency slot busy on the
    CPU; sleep holds it waiting (I/O)."""

    cpu: LatencySpec | None = None
    sleep: LatencySpec | None = None
    firestore: FirestoreStep | None = None
    call: Annotated[CallStep | None, BeforeValidator(lambda v: {"api": v} if isinstance(v, str) else v)] = None
    publish: PublishStep | None = None
    bigquery: BigQueryStep | None = None
    storage: StorageStep | None = None
    poll: PollStep | None = None
    vector: VectorStep | None = None
    sql: SqlStep | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kinds = [k for k in data if k in _STEP_KINDS]
            if len(kinds) != 1 or len(data) != 1:
                raise ValueError(
                    f"a step has exactly one of {', '.join(_STEP_KINDS)}; got {', '.join(map(str, data)) or 'nothing'}"
                )
            if data[kinds[0]] is None:
                raise ValueError(f"step {kinds[0]} needs a value")
        return data

    @property
    def kind(self) -> str:
        return next(k for k in _STEP_KINDS if getattr(self, k) is not None)

    @property
    def spec(self) -> Any:
        return getattr(self, self.kind)


class Route(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str = Field(pattern=r"^/")
    steps: list[Step] = Field(default_factory=list)
    response_status: Annotated[int, in_range(100, 599)] = 202


class Function(Strict):
    """A Cloud Run function: source run with the Functions Framework in its own environment."""

    source: str = Field(min_length=1)
    """Directory holding main.py and requirements.txt (relative to the system file's folder)."""
    target: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The function's name in main.py (--target)."""
    signature: Literal["http", "cloudevent"] = "http"
    """--signature-type: an HTTP function, or a CloudEvent function (triggers)."""


class Service(Strict):
    """A Cloud Run service. `routes` serve HTTP requests; `steps` handle each message of
    the subscriptions whose consumer is this service."""

    name: ServiceId
    """Cloud Run service name."""
    description: str = ""
    routes: list[Route] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    error_rate: Fraction = 0.0
    app: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """Live mode: the ASGI app to run, `module:attribute`."""
    command: list[str] | None = None
    """Live mode, a user's own service: the command that starts it (it must listen on $PORT),
    run in the system file's folder (relative paths are relative to it)."""
    health_path: str | None = Field(None, pattern=r"^/")
    """Live mode, with `command`: a path that answers 2xx once the service is ready. Without
    it, the service is ready when $PORT accepts a TCP connection (nothing is requested: a
    Functions Framework function serves every path)."""
    invokers: list[Member] | None = None
    """Who holds run.invoker on the service: `allUsers` (public) or `serviceAccount:...`
    members. None: public when it has routes, else the service accounts of the push
    subscriptions and triggers that deliver to it."""
    function: Function | None = None
    """Live mode, a function: run with the Functions Framework in a virtualenv from its requirements.txt."""

    @model_validator(mode="after")
    def _one_runner(self) -> "Service":
        runners = [k for k in ("app", "command", "function") if getattr(self, k)]
        if len(runners) > 1:
            raise ValueError(f"give one of app (an ASGI app), command (your own process) or function, "
                             f"not {' and '.join(runners)}")
        if self.health_path and self.app:
            raise ValueError("health_path goes with command or function (an app: answers /healthz)")
        names = [r.name for r in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"route names must be unique, repeated: {', '.join(dupes)}")
        return self


class Job(Strict):
    """A Cloud Run Job: `tasks` task instances, at most `parallelism` at once; each task
    works through its shard of `items` (sharded by CLOUD_RUN_TASK_INDEX) in batches."""

    name: ServiceId
    tasks: Annotated[int, Field(strict=True), in_range(1, 10_000)] = 1
    parallelism: Annotated[int, Field(strict=True), in_range(1, 10_000)] = 1
    items: Annotated[int, Field(strict=True), in_range(0, 10**10)] = 0
    batch_size: PositiveInt = 1
    steps: list[Step] = Field(default_factory=list)
    """Run once per batch."""
    task_timeout: Annotated[Duration, in_range(1, 7 * 86400, "s")] = 600.0
    """Per attempt: a task running longer is killed and counts as a failed attempt."""
    max_retries: Annotated[int, Field(strict=True), in_range(0, 10)] = 3
    """Retries per task (a failed task runs at most max_retries + 1 times)."""
    command: list[str] | None = Field(None, min_length=1)
    """Live mode: the command each task runs (it reads CLOUD_RUN_TASK_INDEX/COUNT/ATTEMPT,
    exits 0 when its shard is done)."""

    @model_validator(mode="after")
    def _batches(self) -> "Job":
        batches = -(-self.items // self.batch_size)
        if batches > MAX_JOB_BATCHES:
            raise ValueError(f"items / batch_size is {batches:,} batches per execution; at most {MAX_JOB_BATCHES:,}: "
                             f"raise batch_size to at least {-(-self.items // MAX_JOB_BATCHES):,}")
        return self


class FirestoreCollection(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    database: str = "(default)"
    freshness: bool = False
    """Simulator: record `freshness.<name>`, the age of the newest message each keyed document
    shows when read (a live map), every step for every key; the plan's `read_every` says how
    its readers read."""


class Column(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: Literal["STRING", "INT64", "INTEGER", "FLOAT64", "FLOAT", "NUMERIC", "BOOL", "BOOLEAN",
                  "BYTES", "DATE", "DATETIME", "TIME", "TIMESTAMP", "JSON", "GEOGRAPHY"]
    mode: Literal["NULLABLE", "REQUIRED", "REPEATED"] = "NULLABLE"


class BigQueryTable(Strict):
    dataset: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    columns: list[Column] = Field(min_length=1)
    partition_field: str | None = None
    """A DATE or TIMESTAMP column: the table is partitioned by day on it."""

    @property
    def ref(self) -> str:
        return f"{self.dataset}.{self.table}"

    @model_validator(mode="after")
    def _partition_is_a_date(self) -> "BigQueryTable":
        if self.partition_field is not None:
            col = next((c for c in self.columns if c.name == self.partition_field), None)
            if col is None:
                raise ValueError(f"partition_field {self.partition_field!r} is not one of the columns")
            if col.type not in ("DATE", "TIMESTAMP", "DATETIME"):
                raise ValueError(f"partition_field {self.partition_field!r} must be DATE, TIMESTAMP or DATETIME, got {col.type}")
        return self


class Bucket(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


class FirestoreLatency(Strict):
    """Service-side latency of Firestore operations from Cloud Run in the same region."""

    read: LatencySpec = Field(default_factory=lambda: {"p50": 0.004, "p99": 0.015})
    write: LatencySpec = Field(default_factory=lambda: {"p50": 0.008, "p99": 0.030})
    transaction: LatencySpec = Field(default_factory=lambda: {"p50": 0.018, "p99": 0.050})
    batch: LatencySpec = Field(default_factory=lambda: {"p50": 0.030, "p99": 0.090})
    per_document_writes: Annotated[Rate, in_range(0.001, 1e7)] = 1.0
    """Sustained writes per second to one document before contention (Firestore's soft limit)."""


class BigQueryLatency(Strict):
    insert: LatencySpec = Field(default_factory=lambda: {"p50": 0.030, "p99": 0.150})
    query: LatencySpec = Field(default_factory=lambda: {"p50": 0.800, "p99": 3.0})
    subscription_rows_per_s: Annotated[Rate, in_range(0.001, 1e7)] = 100_000.0
    """What one BigQuery subscription writes per second."""


class PostgresDatabase(Strict):
    """A PostgreSQL database (Cloud SQL / AlloyDB); live: created on the local PostgreSQL
    (emulators/postgres.py) with its extensions. Tables are the job's or service's own (its
    migrations), as with a real database."""

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    extensions: list[Literal["vector"]] = Field(default_factory=lambda: ["vector"])
    """pgvector (`vector`) is the one the local server bundles."""


class SqlLatency(Strict):
    """Time an operation holds its connection in the database, before any wait for the write log."""

    read: LatencySpec = Field(default_factory=lambda: {"p50": 0.002, "p99": 0.010})
    write: LatencySpec = Field(default_factory=lambda: {"p50": 0.004, "p99": 0.015})
    transaction: LatencySpec = Field(default_factory=lambda: {"p50": 0.008, "p99": 0.030})


class SqlDatabase(Strict):
    """A relational database (Cloud SQL primary) behind the services' connection pools:
    `pool_size` connections in all, and a primary that commits at most `write_capacity`
    rows a second. Past that rate commits queue, connections stay held, and requests queue
    for a connection: latency grows without bound until `pool_timeout` fails them."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    pool_size: Annotated[int, Field(strict=True), in_range(1, 100_000)]
    """Connections open to the database across every instance (instances x per-instance pool)."""
    write_capacity: Annotated[Rate, in_range(0.001, 1e7)]
    """Rows a second the primary commits when saturated (measure it: a write benchmark on the tier)."""
    pool_timeout: Annotated[Duration, in_range(0.001, 3600, "s")] = 30.0
    """How long a request waits for a connection before the pool gives up (HikariCP's default 30 s)."""
    latency: SqlLatency = Field(default_factory=SqlLatency)


class Stores(Strict):
    firestore_latency: FirestoreLatency = Field(default_factory=FirestoreLatency)
    bigquery_latency: BigQueryLatency = Field(default_factory=BigQueryLatency)
    firestore: list[FirestoreCollection] = Field(default_factory=list)
    bigquery: list[BigQueryTable] = Field(default_factory=list)
    storage: list[Bucket] = Field(default_factory=list)
    postgres: list[PostgresDatabase] = Field(default_factory=list)
    sql: list[SqlDatabase] = Field(default_factory=list)
    """Relational databases (Cloud SQL), used by `sql` handler steps."""


# ---- Eventarc triggers: three kinds, told apart by their source field -------------------

#: Event kinds per trigger kind, and the CloudEvent type prefix each is sent with.
TRIGGER_EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "firestore": ("google.cloud.firestore.document.v1.", ("created", "updated", "deleted", "written")),
    "pubsub": ("google.cloud.pubsub.topic.v1.", ("messagePublished",)),
    "storage": ("google.cloud.storage.object.v1.", ("finalized", "deleted", "metadataUpdated")),
}


class Trigger(Strict):
    """An Eventarc trigger: a CloudEvent to the target service for each Firestore document
    change (`collection` or `document`), message published on a Pub/Sub `topic`, or object
    change in a Cloud Storage `bucket`. Exactly one of the three sources."""

    name: ServiceId
    target: ServiceId
    collection: str | None = None
    """Firestore: a top-level collection; shorthand for `document: <collection>/{docId}`."""
    document: str | None = Field(None, pattern=r"^[^/{}]+(/([^/{}]+|\{[A-Za-z_][A-Za-z0-9_]*(=\*\*)?\}))+$")
    """Firestore: Eventarc's `match-path-pattern`, e.g. `orders/{orderId}` (`{x}` one segment, `{x=**}` any)."""
    topic: PubSubName | None = None
    """Pub/Sub: the topic; the trigger creates its own push subscription on it."""
    bucket: str | None = None
    """Cloud Storage: a bucket declared under stores.storage."""
    events: list[str] | None = None
    """Firestore: created, updated, deleted, written (default); Storage: finalized (default), deleted,
    metadataUpdated; Pub/Sub: messagePublished."""
    database: str = "(default)"
    """Firestore: the database filter."""
    service_account: ServiceAccount | None = None
    """The identity Eventarc invokes the target with; None:
    `<trigger>-trigger@<project>.iam.gserviceaccount.com`."""
    encoding: Literal["protobuf", "json"] = "protobuf"
    """Firestore: the event body, DocumentEventData as protobuf (Eventarc's default) or as JSON."""
    path: str = Field("/", pattern=r"^/")
    """Path on the target service the events go to."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    """Backoff between delivery attempts of a failed event (Eventarc's: 10s doubling to 600s); for a
    Pub/Sub trigger, its push subscription's retry policy."""
    dead_letter: DeadLetter | None = None
    """Pub/Sub triggers: dead-letter topic of their push subscription."""
    delivery_latency: LatencySpec | None = None
    """Simulator: source change to delivery (default per kind, sim/triggers.py)."""

    @model_validator(mode="before")
    @classmethod
    def _fill(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        given = [k for k in ("collection", "document", "topic", "bucket") if data.get(k) is not None]
        if len(given) != 1 and set(given) != {"collection", "document"}:
            raise ValueError("a trigger has exactly one source: collection/document (Firestore), topic (Pub/Sub) "
                             f"or bucket (Cloud Storage); got {', '.join(given) or 'none'}")
        doc, col = data.get("document"), data.get("collection")
        if isinstance(doc, str) and col is None:
            data["collection"] = doc.split("/", 1)[0]
        elif isinstance(col, str) and doc is None:
            data["document"] = f"{col}/{{docId}}"
        kind = "pubsub" if data.get("topic") else "storage" if data.get("bucket") else "firestore"
        if data.get("events") is None:
            data["events"] = [{"firestore": "written", "pubsub": "messagePublished", "storage": "finalized"}[kind]]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "Trigger":
        if self.document is not None and self.document.split("/", 1)[0] != self.collection:
            raise ValueError(f"document {self.document!r} is not in collection {self.collection!r}")
        _, allowed = TRIGGER_EVENTS[self.kind]
        bad = [e for e in self.events or () if e not in allowed]
        if bad or not self.events:
            raise ValueError(f"events of a {self.kind} trigger are {', '.join(allowed)}; got {', '.join(bad) or 'none'}")
        if self.kind != "pubsub" and self.dead_letter is not None:
            raise ValueError("dead_letter is for Pub/Sub triggers (Eventarc retries the others itself)")
        return self

    @property
    def kind(self) -> str:
        return "pubsub" if self.topic else "storage" if self.bucket else "firestore"

    @property
    def event_type(self) -> str:
        return TRIGGER_EVENTS[self.kind][0] + self.events[0]

    @property
    def subscription(self) -> str | None:
        """A Pub/Sub trigger's own push subscription (Eventarc: eventarc-<region>-<trigger>-sub-<n>)."""
        return f"eventarc-{self.name}-sub" if self.topic else None

    @property
    def event_types(self) -> list[str]:
        return [TRIGGER_EVENTS[self.kind][0] + e for e in self.events]


class WorkflowStep(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    call: ServiceId | None = None
    """A service or an external API (a step has `call` or `run_job`)."""
    run_job: ServiceId | None = None
    """A Cloud Run job of this system: the step starts an execution, as Workflows'
    googleapis.run.v2.projects.locations.jobs.run does, waits for it to end (`timeout` counts)
    and fails when one of its tasks used every retry."""
    wait: bool = True
    """run_job: false starts the execution and goes on at once (the connector's
    `skip_polling`); the step then never fails for the job."""
    latency: LatencySpec | None = None
    """Work done by the callee when it is an external API (a service runs its own steps)."""
    timeout: Annotated[Duration, in_range(0.001, 31_536_000, "s")] = 60.0
    """A call's (at most 30m; default 1m), or a run_job's wait for its execution (at most a
    year; default 30m, the connector's)."""
    retries: Annotated[int, Field(strict=True), in_range(0, 100)] = 0
    backoff: Annotated[Duration, in_range(0, 3600, "s")] = 1.0
    compensate: str | None = None
    """The workflow step to run when a later step fails (the saga's undo)."""

    @model_validator(mode="before")
    @classmethod
    def _job_timeout(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("run_job") is not None and "timeout" not in data:
            return {**data, "timeout": 1800.0}
        return data

    @model_validator(mode="after")
    def _one_callee(self) -> "WorkflowStep":
        if (self.call is None) == (self.run_job is None):
            raise ValueError("a workflow step has exactly one of call (a service or external API) or run_job (a job)")
        if not self.wait and self.run_job is None:
            raise ValueError("wait: false is for run_job steps")
        if self.call is not None and self.timeout > 1800:
            raise ValueError(f"timeout: a call's is at most 30m, got {format_duration(self.timeout)}")
        return self


class Workflow(Strict):
    """A Workflows saga: steps in order; when a step fails after its retries, the
    compensations of the completed steps run in reverse order."""

    name: ServiceId
    trigger: PubSubName | None = None
    """Topic whose messages start an execution (through an Eventarc trigger)."""
    steps: list[WorkflowStep] = Field(min_length=1)
    compensations: list[WorkflowStep] = Field(default_factory=list)
    source: str | None = Field(None, pattern=r"\.ya?ml$")
    """Live mode: the workflow's Google Workflows YAML (relative to this file), run by the
    local executor (docs/workflows.md) for each message of `trigger`; `steps:` stay the
    simulator's model of it."""


class ExternalApi(Strict):
    """A dependency outside the system: its latency, error rate and rate limit. In live
    mode the fake gateways in services/ play it, controllable at run time."""

    name: ServiceId
    latency: LatencySpec
    error_rate: Fraction = 0.0
    rate_limit: Rate | None = None
    """Requests per second beyond which the API answers 429."""
    concurrency: Annotated[int, Field(strict=True), in_range(1, 100_000)] | None = None
    """Connections the API serves at once (None: unbounded)."""
    tokens_per_minute: Annotated[float, in_range(1, 1e12)] | None = None
    """Live mode, the embedding fake: its token quota (429 with Retry-After beyond it), scaled
    by rate_scale like rate_limit. The simulator models rate_limit (requests) only."""
    fake: Literal["sms", "billing", "generic", "embedding"] | None = None
    """Live mode: which fake in services/fakes stands in for it (`embedding`: POST
    /v1/embeddings with deterministic vectors and a token quota)."""
    url: str | None = None
    """Live mode, a real endpoint on 127.0.0.1 instead of a fake."""


class System(Strict):
    name: ServiceId
    description: str = ""
    project: str = Field("surgesim-local", pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    topics: list[Topic] = Field(default_factory=list)
    subscriptions: list[Subscription] = Field(default_factory=list)
    services: list[Service] = Field(default_factory=list)
    jobs: list[Job] = Field(default_factory=list)
    stores: Stores = Field(default_factory=Stores)
    triggers: list[Trigger] = Field(default_factory=list)
    workflows: list[Workflow] = Field(default_factory=list)
    external_apis: list[ExternalApi] = Field(default_factory=list)

    def topic(self, name: str) -> Topic:
        return next(t for t in self.topics if t.name == name)

    def subscription(self, name: str) -> Subscription:
        return next(s for s in self.subscriptions if s.name == name)

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def subscriptions_of(self, topic: str) -> list[Subscription]:
        return [s for s in self.subscriptions if s.topic == topic]

    def api(self, name: str) -> ExternalApi:
        return next(a for a in self.external_apis if a.name == name)
