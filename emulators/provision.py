"""Create what a system file declares on the emulators, idempotently.

Topics, subscriptions (filter, ack deadline, retry backoff, dead-letter topic and max
attempts, retention, ordering), BigQuery datasets and DATE-partitioned tables, Cloud Storage
buckets, Firestore databases, and PostgreSQL databases with their extensions. Each resource ends as `created`, `unchanged`, `updated`
or `conflict` (exists with a setting Pub/Sub cannot change in place, e.g. a filter); a
second run on the same system reports everything `unchanged`.

Push and BigQuery subscriptions are created on the emulator as pull subscriptions that
the bridges (emulators/push.py, emulators/bq_subscription.py) drain and deliver, because
the emulator caps push at two requests in flight and has no BigQuery subscriptions. Their
delivery kind is kept in the `surgesim-delivery` label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from surgesim.schema import System
from surgesim.schema.system import BigQueryTable, Subscription

from .clients import Clients

LABEL = "surgesim-delivery"


@dataclass(frozen=True)
class Outcome:
    kind: str  # topic, subscription, dataset, table, bucket, firestore
    name: str
    action: str  # created, unchanged, updated, conflict
    detail: str = ""


def _seconds(duration) -> float:
    if duration is None:
        return 0.0
    if hasattr(duration, "total_seconds"):
        return duration.total_seconds()
    return duration.seconds + duration.nanos / 1e9


def _wanted_subscription(project: str, sub: Subscription) -> dict:
    """The Subscription resource fields we manage, in the client's dict form."""
    wanted = {
        "name": f"projects/{project}/subscriptions/{sub.name}",
        "topic": f"projects/{project}/topics/{sub.topic}",
        "ack_deadline_seconds": int(sub.ack_deadline),
        "message_retention_duration": {"seconds": int(sub.retention)},
        "enable_message_ordering": sub.ordering,
        "labels": {LABEL: sub.delivery},
    }
    if sub.filter:
        wanted["filter"] = sub.filter
    if sub.retry is not None:
        wanted["retry_policy"] = {
            "minimum_backoff": {"seconds": int(sub.retry.min_backoff)},
            "maximum_backoff": {"seconds": int(sub.retry.max_backoff)},
        }
    if sub.dead_letter is not None:
        wanted["dead_letter_policy"] = {
            "dead_letter_topic": f"projects/{project}/topics/{sub.dead_letter.topic}",
            "max_delivery_attempts": sub.dead_letter.max_attempts,
        }
    return wanted


def _differences(existing, sub: Subscription, project: str) -> tuple[list[str], list[str]]:
    """(fields we can update in place, fields we cannot) where the emulator's copy differs."""
    mutable, fixed = [], []
    if existing.topic != f"projects/{project}/topics/{sub.topic}" and existing.topic != "_deleted-topic_":
        fixed.append(f"topic is {existing.topic.rsplit('/', 1)[-1]}")
    if (existing.filter or "") != (sub.filter or ""):
        fixed.append("filter")
    if existing.enable_message_ordering != sub.ordering:
        fixed.append("ordering")
    if existing.ack_deadline_seconds != int(sub.ack_deadline):
        mutable.append("ack_deadline_seconds")
    # Labels are informational (set at creation); the emulator refuses to update them.
    has_retry = existing.retry_policy is not None and (
        _seconds(existing.retry_policy.minimum_backoff) or _seconds(existing.retry_policy.maximum_backoff)
    )
    if sub.retry is None:
        if has_retry:
            mutable.append("retry_policy")
    elif (_seconds(existing.retry_policy.minimum_backoff), _seconds(existing.retry_policy.maximum_backoff)) != (
        float(int(sub.retry.min_backoff)), float(int(sub.retry.max_backoff))
    ):
        mutable.append("retry_policy")
    dlp = existing.dead_letter_policy
    have_dlq = (dlp.dead_letter_topic.rsplit("/", 1)[-1], dlp.max_delivery_attempts) if dlp and dlp.dead_letter_topic else None
    want_dlq = (sub.dead_letter.topic, sub.dead_letter.max_attempts) if sub.dead_letter else None
    if have_dlq != want_dlq:
        mutable.append("dead_letter_policy")
    if int(_seconds(existing.message_retention_duration)) != int(sub.retention):
        mutable.append("message_retention_duration")
    return mutable, fixed


def _provision_pubsub(system: System, clients: Clients, say: Callable[[Outcome], None]) -> None:
    from google.api_core.exceptions import AlreadyExists, NotFound
    from google.protobuf import field_mask_pb2
    from google.pubsub_v1.types import Subscription as SubscriptionProto

    project = system.project
    publisher = clients.publisher()
    subscriber = clients.subscriber()
    for topic in system.topics:
        path = publisher.topic_path(project, topic.name)
        try:
            publisher.get_topic(request={"topic": path})
            say(Outcome("topic", topic.name, "unchanged"))
        except NotFound:
            try:
                publisher.create_topic(request={"name": path})
                say(Outcome("topic", topic.name, "created"))
            except AlreadyExists:
                say(Outcome("topic", topic.name, "unchanged"))
    for sub in system.subscriptions:
        wanted = _wanted_subscription(project, sub)
        try:
            existing = subscriber.get_subscription(request={"subscription": wanted["name"]})
        except NotFound:
            subscriber.create_subscription(request=wanted)
            say(Outcome("subscription", sub.name, "created", _describe(sub)))
            continue
        mutable, fixed = _differences(existing, sub, project)
        if fixed:
            say(Outcome("subscription", sub.name, "conflict",
                        f"exists with a different {', '.join(fixed)}, which Pub/Sub cannot change in place: "
                        "delete the subscription or give it a new name"))
        elif mutable:
            update = SubscriptionProto(wanted)
            mask = field_mask_pb2.FieldMask(paths=mutable)
            subscriber.update_subscription(request={"subscription": update, "update_mask": mask})
            say(Outcome("subscription", sub.name, "updated", ", ".join(mutable)))
        else:
            say(Outcome("subscription", sub.name, "unchanged"))


def _describe(sub: Subscription) -> str:
    parts = [sub.delivery, f"ack {sub.ack_deadline:g}s"]
    if sub.filter:
        parts.append("filtered")
    if sub.retry:
        parts.append(f"backoff {sub.retry.min_backoff:g}-{sub.retry.max_backoff:g}s")
    if sub.dead_letter:
        parts.append(f"DLQ {sub.dead_letter.topic} after {sub.dead_letter.max_attempts}")
    return ", ".join(parts)


def _schema(table: BigQueryTable):
    from google.cloud import bigquery

    return [bigquery.SchemaField(c.name, c.type, mode=c.mode) for c in table.columns]


def _provision_bigquery(system: System, clients: Clients, say: Callable[[Outcome], None]) -> None:
    from google.api_core.exceptions import Conflict, NotFound
    from google.cloud import bigquery

    client = clients.bigquery()
    project = system.project
    for dataset in sorted({t.dataset for t in system.stores.bigquery}):
        ref = f"{project}.{dataset}"
        try:
            client.get_dataset(ref, timeout=10)
            say(Outcome("dataset", dataset, "unchanged"))
        except NotFound:
            try:
                client.create_dataset(bigquery.Dataset(ref), timeout=10)
                say(Outcome("dataset", dataset, "created"))
            except Conflict:
                say(Outcome("dataset", dataset, "unchanged"))
    for table in system.stores.bigquery:
        ref = f"{project}.{table.ref}"
        try:
            existing = client.get_table(ref, timeout=10)
        except NotFound:
            tbl = bigquery.Table(ref, schema=_schema(table))
            if table.partition_field:
                tbl.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.DAY, field=table.partition_field
                )
            client.create_table(tbl, timeout=10)
            detail = f"partitioned by {table.partition_field}" if table.partition_field else ""
            say(Outcome("table", table.ref, "created", detail))
            continue
        have = [(f.name, f.field_type, f.mode) for f in existing.schema]
        want = [(c.name, _canonical_type(c.type), c.mode) for c in table.columns]
        have = [(n, _canonical_type(t), m or "NULLABLE") for n, t, m in have]
        part = existing.time_partitioning.field if existing.time_partitioning else None
        if have != want or part != table.partition_field:
            say(Outcome("table", table.ref, "conflict",
                        "exists with a different schema or partitioning: drop it to recreate"))
        else:
            say(Outcome("table", table.ref, "unchanged"))


def _canonical_type(t: str) -> str:
    return {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}.get(t, t)


def _provision_storage(system: System, clients: Clients, say: Callable[[Outcome], None]) -> None:
    from google.api_core.exceptions import Conflict, NotFound

    client = clients.storage()
    for bucket in system.stores.storage:
        try:
            client.get_bucket(bucket.name, timeout=10)
            say(Outcome("bucket", bucket.name, "unchanged"))
        except NotFound:
            try:
                client.create_bucket(bucket.name, timeout=10)
                say(Outcome("bucket", bucket.name, "created"))
            except Conflict:
                say(Outcome("bucket", bucket.name, "unchanged"))


def _provision_firestore(system: System, clients: Clients, say: Callable[[Outcome], None]) -> None:
    # Firestore has no collection objects: a collection exists once a document is written.
    # The emulator creates databases on first use, so provisioning records the declared
    # collections in one metadata document per database, which also proves it is reachable.
    databases: dict[str, list[str]] = {}
    for col in system.stores.firestore:
        databases.setdefault(col.database, []).append(col.name)
    for database, collections in sorted(databases.items()):
        db = clients.firestore(database=database)
        ref = db.collection("_surgesim").document(f"system-{system.name}")
        snap = ref.get()
        wanted = {"system": system.name, "collections": sorted(collections)}
        if snap.exists and snap.to_dict() == wanted:
            say(Outcome("firestore", database, "unchanged", f"{len(collections)} collections"))
        else:
            ref.set(wanted)
            say(Outcome("firestore", database, "updated" if snap.exists else "created",
                        f"{len(collections)} collections: {', '.join(sorted(collections))}"))


def provision(system: System, clients: Clients, say: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Create everything `system` declares on the emulators `clients` point at."""
    outcomes: list[Outcome] = []
    # Every resource lives in the system's project, whatever project the clients default to.
    clients = Clients(clients.env, project=system.project)

    def record(o: Outcome) -> None:
        outcomes.append(o)
        if say is not None:
            say(o)

    _provision_pubsub(system, clients, record)
    if system.stores.firestore:
        _provision_firestore(system, clients, record)
    if system.stores.bigquery:
        _provision_bigquery(system, clients, record)
    if system.stores.storage:
        _provision_storage(system, clients, record)
    if system.stores.postgres:
        _provision_postgres(system, clients, record)
    return outcomes


def _provision_postgres(system: System, clients: Clients, record) -> None:
    """Each database (CREATE DATABASE has no IF NOT EXISTS) and its extensions."""
    from .postgres import connect

    host, port = clients.env["PGHOST"], int(clients.env["PGPORT"])
    with connect(host, port, autocommit=True) as conn:
        have = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        for db in system.stores.postgres:
            if db.name not in have:
                conn.execute(f'CREATE DATABASE "{db.name}"')  # name checked by the schema's pattern
            record(Outcome("postgres", db.name, "unchanged" if db.name in have else "created"))
    for db in system.stores.postgres:
        with connect(host, port, db.name, autocommit=True) as conn:
            for ext in db.extensions:
                conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}"')


def needed_emulators(system: System) -> list[str]:
    names = ["pubsub"]
    if system.stores.firestore or system.triggers:
        names.append("firestore")
    if system.stores.bigquery:
        names.append("bigquery")
    if system.stores.storage:
        names.append("storage")
    if system.stores.postgres:
        names.append("postgres")
    return names
