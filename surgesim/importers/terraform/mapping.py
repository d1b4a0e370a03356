"""Terraform resources -> the system file and the plan. One small function per resource
type, registered in MAPPERS; what a type carries that the system file cannot say is a
note, what cannot be resolved statically is a problem naming the resource and attribute."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlparse

from surgesim.importers.terraform import units
from surgesim.importers.terraform.expr import contains_unknown, materialise
from surgesim.importers.terraform.resolve import COMPUTED, RUN_HOST, BlockValue, Instance
from surgesim.importers.terraform.workflows import WorkflowSource, translate_workflow
from surgesim.schema.common import format_duration
from surgesim.schema.system import Service

_MISSING = object()


class _Unresolved(Exception):
    """Raised by Builder.get for a required attribute: the resource is left out."""


@dataclass
class Builder:
    """What the mappers build up, in the order the system file lists it."""

    topics: dict[str, dict] = field(default_factory=dict)
    subscriptions: dict[str, dict] = field(default_factory=dict)
    services: dict[str, dict] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)
    tables: dict[str, dict] = field(default_factory=dict)
    buckets: dict[str, dict] = field(default_factory=dict)
    collections: dict[str, dict] = field(default_factory=dict)
    triggers: dict[str, dict] = field(default_factory=dict)
    workflows: dict[str, WorkflowSource] = field(default_factory=dict)
    workflow_topics: dict[str, str] = field(default_factory=dict)
    plan_services: dict[str, dict] = field(default_factory=dict)
    plan_jobs: dict[str, dict] = field(default_factory=dict)
    invokers: dict[str, list[tuple[str, Instance]]] = field(default_factory=dict)
    pushes: list[tuple[str, str, Instance]] = field(default_factory=list)
    """(subscription, endpoint, where): resolved to a service once every service is known."""
    left_out: set[tuple[str, str]] = field(default_factory=set)
    """(group, name) that Terraform declares but the import could not carry (a drift check ignores them)."""
    origins: dict[tuple[str, str], str] = field(default_factory=dict)
    """(group, name) -> 'main.tf:12 google_x.y', for messages about the imported file."""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    # -- reading attributes
    def get(self, inst: Instance, obj: BlockValue, name: str, default: Any = _MISSING) -> Any:
        """An attribute, fully resolved. Unset: `default` (or a problem when there is
        none). Not statically known: always a problem naming the resource and attribute."""
        if name not in obj.block.attrs and not obj.block.children(name) and not isinstance(obj, Instance):
            if default is _MISSING:
                self.problem(inst, f"{_rel(inst, obj)}{name}", "is required")
                raise _Unresolved
            return default
        if isinstance(obj, Instance) and not obj.has(name) and name != "project":
            if default is not _MISSING:
                return default
            if name not in COMPUTED.get(obj.type, {}):
                self.problem(inst, name, "is required")
                raise _Unresolved
        value = materialise(obj.get_attr(name))
        unknown = contains_unknown(value)
        if unknown:
            self.problem(inst, f"{_rel(inst, obj)}{name}", f"cannot be resolved statically: {unknown.reason}")
            raise _Unresolved
        return value

    def block(self, obj: BlockValue, name: str) -> BlockValue | None:
        found = obj.blocks(name) if isinstance(obj, Instance) else [
            BlockValue(b, obj.scope, obj.bindings, f"{obj.addr}.{name}") for b in obj.block.children(name)]
        return found[0] if found else None

    def blocks(self, obj: BlockValue, name: str) -> list[BlockValue]:
        return [BlockValue(b, obj.scope, obj.bindings, f"{obj.addr}.{name}") for b in obj.block.children(name)]

    def problem(self, inst: Instance, attr: str, message: str) -> None:
        self.problems.append(f"{inst.where}: {inst.addr}: {attr}: {message}")

    def note(self, inst: Instance, message: str) -> None:
        self.notes.append(f"{inst.where}: {inst.addr}: {message}")

    def origin(self, group: str, name: str, inst: Instance) -> None:
        self.origins[(group, name)] = f"{inst.where} {inst.addr}"


def _rel(inst: Instance, obj: BlockValue) -> str:
    """The block path of `obj` inside the resource, e.g. 'push_config.oidc_token.'."""
    if obj is inst:
        return ""
    return obj.addr[len(inst.addr) + 1:].replace("[0]", "") + "."


def _convert(b: Builder, inst: Instance, attr: str, fn: Callable[[Any], Any], value: Any) -> Any:
    try:
        return fn(value)
    except (ValueError, TypeError) as exc:
        b.problem(inst, attr, str(exc))
        raise _Unresolved from None


def _duration(b: Builder, inst: Instance, attr: str, value: Any) -> str:
    return format_duration(_convert(b, inst, attr, units.seconds, value))


MAPPERS: dict[str, Callable[[Builder, Instance], None]] = {}


def mapper(*types: str):
    def register(fn: Callable[[Builder, Instance], None]):
        for t in types:
            MAPPERS[t] = fn
        return fn

    return register


# ---- Pub/Sub ------------------------------------------------------------------------------


@mapper("google_pubsub_topic")
def _topic(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    topic: dict[str, Any] = {"name": name}
    retention = b.get(inst, inst, "message_retention_duration", None)
    if retention is not None:
        topic["retention"] = _duration(b, inst, "message_retention_duration", retention)
    b.topics[name] = topic
    b.origin("topics", name, inst)


@mapper("google_pubsub_subscription")
def _subscription(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    topic = units.last_segment(b.get(inst, inst, "topic"), "topics")
    sub: dict[str, Any] = {"name": name, "topic": topic}
    if b.block(inst, "cloud_storage_config") is not None:
        bucket = b.get(inst, b.block(inst, "cloud_storage_config"), "bucket", "?")
        b.skipped.append(f"{inst.where}: {inst.addr}: a Cloud Storage subscription (to bucket {bucket}): "
                         "the system file has no Cloud Storage delivery, so it is left out")
        b.left_out.add(("subscriptions", name))
        return
    push = b.block(inst, "push_config")
    bq = b.block(inst, "bigquery_config")
    if push is not None:
        sub["delivery"] = "push"
        b.pushes.append((name, b.get(inst, push, "push_endpoint"), inst))
        oidc = b.block(push, "oidc_token")
        if oidc is not None:
            account = b.get(inst, oidc, "service_account_email")
            b.note(inst, f"push_config.oidc_token: pushes carry an OIDC token of {account}; "
                         "this version's system file does not model push identities")
        if b.block(push, "no_wrapper") is not None:
            b.note(inst, "push_config.no_wrapper: the system file pushes the standard envelope")
    elif bq is not None:
        sub["delivery"] = "bigquery"
        table = _convert(b, inst, "bigquery_config.table", units.bigquery_table, b.get(inst, bq, "table"))
        spec: dict[str, Any] = {"table": table}
        for key in ("write_metadata", "use_table_schema"):
            value = b.get(inst, bq, key, None)
            if value is not None:
                spec[key] = bool(value)
        sub["bigquery"] = spec
    else:
        b.note(inst, f"pull subscription {name}: set `consumer:` to the service that pulls it "
                     "(Terraform does not say who pulls)")
    filt = b.get(inst, inst, "filter", None)
    if filt:
        sub["filter"] = filt
    ack = b.get(inst, inst, "ack_deadline_seconds", None)
    if ack is not None:
        sub["ack_deadline"] = _duration(b, inst, "ack_deadline_seconds", ack)
    retry = b.block(inst, "retry_policy")
    if retry is not None:
        sub["retry"] = {
            "min_backoff": _duration(b, inst, "retry_policy.minimum_backoff", b.get(inst, retry, "minimum_backoff", "10s")),
            "max_backoff": _duration(b, inst, "retry_policy.maximum_backoff", b.get(inst, retry, "maximum_backoff", "600s")),
        }
    dead = b.block(inst, "dead_letter_policy")
    if dead is not None:
        sub["dead_letter"] = {
            "topic": units.last_segment(b.get(inst, dead, "dead_letter_topic"), "topics"),
            "max_attempts": int(b.get(inst, dead, "max_delivery_attempts", 5)),
        }
    retention = b.get(inst, inst, "message_retention_duration", None)
    if retention is not None:
        sub["retention"] = _duration(b, inst, "message_retention_duration", retention)
    if b.get(inst, inst, "enable_message_ordering", False):
        sub["ordering"] = True
    if b.get(inst, inst, "enable_exactly_once_delivery", False):
        b.note(inst, "enable_exactly_once_delivery: not modelled; the rehearsal delivers at least once")
    b.subscriptions[name] = sub
    b.origin("subscriptions", name, inst)


# ---- Cloud Run services, jobs and functions ------------------------------------------------


def _service(b: Builder, inst: Instance, name: str, what: str) -> dict:
    svc: dict[str, Any] = {"name": name, "description": f"Imported from Terraform ({inst.addr}); {what}."}
    b.services[name] = svc
    b.origin("services", name, inst)
    b.note(inst, f"service {name}: {what}; fill `command:` (your process, listening on $PORT) or "
                 "`app:` (module:attribute) to run it live; until then `surgesim up`/`live` list it as skipped")
    return svc


def schema_accepts(field_name: str, value: Any) -> bool:
    """Whether this version's Service model has `field_name` and takes `value` for it: fields
    other branches add (an invoker allow-list, env) are carried once the schema has them."""
    if field_name not in Service.model_fields:
        return False
    try:
        Service.model_validate({"name": "probe", field_name: value})
    except ValueError:
        return False
    return True


def _env(b: Builder, inst: Instance, svc: dict, env: dict[str, str]) -> None:
    if not env:
        return
    if schema_accepts("env", env):
        svc["env"] = env
    else:
        b.note(inst, f"environment variables {', '.join(sorted(env))}: this version's system file does not carry them")


@mapper("google_cloud_run_v2_service")
def _cloud_run_service(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    template = b.block(inst, "template")
    if template is None:
        b.problem(inst, "template", "is required")
        return
    container = b.block(template, "containers")
    image = b.get(inst, container, "image", "?") if container is not None else "?"
    svc = _service(b, inst, name, f"image {image} cannot run locally")
    plan: dict[str, Any] = {}
    for scaling in filter(None, [b.block(inst, "scaling"), b.block(template, "scaling")]):
        lo = b.get(inst, scaling, "min_instance_count", None)
        hi = b.get(inst, scaling, "max_instance_count", None)
        if lo is not None:
            plan["min_instances"] = int(lo)
        if hi is not None:
            plan["max_instances"] = int(hi)
    concurrency = b.get(inst, template, "max_instance_request_concurrency", None)
    if concurrency is not None:
        plan["concurrency"] = int(concurrency)
    timeout = b.get(inst, template, "timeout", None)
    if timeout is not None:
        plan["request_timeout"] = _duration(b, inst, "template.timeout", timeout)
    env: dict[str, str] = {}
    if container is not None:
        resources = b.block(container, "resources")
        if resources is not None:
            limits = b.get(inst, resources, "limits", {}) or {}
            if "cpu" in limits:
                plan["cpu"] = _convert(b, inst, "template.containers.resources.limits.cpu", units.cpu, limits["cpu"])
            if "memory" in limits:
                plan["memory_gib"] = _convert(b, inst, "template.containers.resources.limits.memory",
                                              units.memory_gib, limits["memory"])
            idle = b.get(inst, resources, "cpu_idle", None)
            if idle is not None:
                plan["cpu_always_allocated"] = not idle
        for e in b.blocks(container, "env"):
            key = b.get(inst, e, "name")
            if b.block(e, "value_source") is not None:
                b.note(inst, f"env {key}: a secret reference; give the service a local value yourself")
                continue
            env[key] = str(b.get(inst, e, "value", ""))
    _env(b, inst, svc, env)
    account = b.get(inst, template, "service_account", None)
    ingress = b.get(inst, inst, "ingress", None)
    if ingress not in (None, "INGRESS_TRAFFIC_ALL"):
        b.note(inst, f"ingress {ingress}: every local caller reaches the service; ingress is not modelled")
    if account is not None:
        svc["description"] += f" Runs as {account}."
    if plan:
        b.plan_services[name] = plan


@mapper("google_cloud_run_service")
def _cloud_run_service_v1(b: Builder, inst: Instance) -> None:
    """The first-generation resource (`template { spec { ... } }`, scaling in Knative annotations)."""
    name = b.get(inst, inst, "name")
    template = b.block(inst, "template")
    spec = b.block(template, "spec") if template is not None else None
    if spec is None:
        b.problem(inst, "template.spec", "is required")
        return
    container = b.block(spec, "containers")
    image = b.get(inst, container, "image", "?") if container is not None else "?"
    svc = _service(b, inst, name, f"image {image} cannot run locally")
    plan: dict[str, Any] = {}
    meta = b.block(template, "metadata")
    annotations = (b.get(inst, meta, "annotations", {}) or {}) if meta is not None else {}
    for key, knob in (("autoscaling.knative.dev/minScale", "min_instances"), ("autoscaling.knative.dev/maxScale", "max_instances")):
        if key in annotations:
            plan[knob] = _convert(b, inst, f"template.metadata.annotations[{key!r}]", int, annotations[key])
    concurrency = b.get(inst, spec, "container_concurrency", None)
    if concurrency:  # 0 means Cloud Run's default
        plan["concurrency"] = int(concurrency)
    timeout = b.get(inst, spec, "timeout_seconds", None)
    if timeout is not None:
        plan["request_timeout"] = format_duration(float(timeout))
    env: dict[str, str] = {}
    if container is not None:
        resources = b.block(container, "resources")
        limits = (b.get(inst, resources, "limits", {}) or {}) if resources is not None else {}
        if "cpu" in limits:
            plan["cpu"] = _convert(b, inst, "template.spec.containers.resources.limits.cpu", units.cpu, limits["cpu"])
        if "memory" in limits:
            plan["memory_gib"] = _convert(b, inst, "template.spec.containers.resources.limits.memory",
                                          units.memory_gib, limits["memory"])
        for e in b.blocks(container, "env"):
            if b.block(e, "value_from") is None:
                env[b.get(inst, e, "name")] = str(b.get(inst, e, "value", ""))
    _env(b, inst, svc, env)
    account = b.get(inst, spec, "service_account_name", None)
    if account is not None:
        svc["description"] += f" Runs as {account}."
    if plan:
        b.plan_services[name] = plan


@mapper("google_cloud_run_v2_job")
def _cloud_run_job(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    outer = b.block(inst, "template")
    if outer is None:
        b.problem(inst, "template", "is required")
        return
    tasks = int(b.get(inst, outer, "task_count", 1))
    parallelism = int(b.get(inst, outer, "parallelism", 0)) or tasks  # 0: Cloud Run runs them all at once
    job: dict[str, Any] = {"name": name, "tasks": tasks, "parallelism": parallelism}
    inner = b.block(outer, "template")
    plan: dict[str, Any] = {}
    if inner is not None:
        timeout = b.get(inst, inner, "timeout", None)
        if timeout is not None:
            job["task_timeout"] = _duration(b, inst, "template.template.timeout", timeout)
        retries = b.get(inst, inner, "max_retries", None)
        if retries is not None:
            job["max_retries"] = int(retries)
        container = b.block(inner, "containers")
        resources = b.block(container, "resources") if container is not None else None
        if resources is not None:
            limits = b.get(inst, resources, "limits", {}) or {}
            if "cpu" in limits:
                plan["cpu"] = _convert(b, inst, "template.template.containers.resources.limits.cpu", units.cpu, limits["cpu"])
            if "memory" in limits:
                plan["memory_gib"] = _convert(b, inst, "template.template.containers.resources.limits.memory",
                                              units.memory_gib, limits["memory"])
    b.jobs[name] = job
    b.origin("jobs", name, inst)
    b.note(inst, f"job {name}: its work per task (`items`, `batch_size`, `steps`) is not in Terraform; fill it in")
    if plan:
        b.plan_jobs[name] = plan


@mapper("google_cloudfunctions2_function")
def _function(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    build = b.block(inst, "build_config")
    runtime = b.get(inst, build, "runtime", "?") if build is not None else "?"
    entry = b.get(inst, build, "entry_point", "?") if build is not None else "?"
    svc = _service(b, inst, name, f"a Cloud Run function ({runtime}, entry point {entry}) built from source it cannot build")
    cfg = b.block(inst, "service_config")
    plan: dict[str, Any] = {}
    if cfg is not None:
        for key, knob, conv in (("max_instance_count", "max_instances", int), ("min_instance_count", "min_instances", int),
                                ("max_instance_request_concurrency", "concurrency", int),
                                ("available_cpu", "cpu", units.cpu), ("available_memory", "memory_gib", units.memory_gib)):
            value = b.get(inst, cfg, key, None)
            if value is not None:
                plan[knob] = _convert(b, inst, f"service_config.{key}", conv, value)
        timeout = b.get(inst, cfg, "timeout_seconds", None)
        if timeout is not None:
            plan["request_timeout"] = format_duration(float(timeout))
        _env(b, inst, svc, {k: str(v) for k, v in (b.get(inst, cfg, "environment_variables", {}) or {}).items()})
        ingress = b.get(inst, cfg, "ingress_settings", None)
        if ingress not in (None, "ALLOW_ALL"):
            b.note(inst, f"ingress_settings {ingress}: not modelled")
    if plan:
        b.plan_services[name] = plan
    trigger = b.block(inst, "event_trigger")
    if trigger is None:
        return
    event_type = b.get(inst, trigger, "event_type")
    criteria = {"type": (event_type, None)}
    for f in b.blocks(trigger, "event_filters"):
        criteria[b.get(inst, f, "attribute")] = (b.get(inst, f, "value"), b.get(inst, f, "operator", None))
    topic = b.get(inst, trigger, "pubsub_topic", None)
    _route_event(b, inst, f"{name}", criteria, topic, ("service", name), "/")


# ---- Eventarc -----------------------------------------------------------------------------

_FIRESTORE = "google.cloud.firestore.document.v1."
_PUBSUB = "google.cloud.pubsub.topic.v1.messagePublished"


def _route_event(b: Builder, inst: Instance, name: str, criteria: dict[str, tuple[Any, Any]], topic: str | None,
                 target: tuple[str, str], path: str) -> None:
    """An event route (Eventarc trigger or a function's event_trigger) into the system file."""
    event_type = criteria["type"][0]
    kind, dest = target
    if event_type == _PUBSUB:
        if topic is None:
            b.problem(inst, "transport.pubsub.topic", "a Pub/Sub trigger without a topic: Eventarc would create "
                                                      "one that nothing in this configuration publishes to")
            return
        topic = units.last_segment(topic, "topics")
        if kind == "workflow":
            b.workflow_topics[dest] = topic
            return
        sub_name = f"eventarc-{name}"
        b.subscriptions[sub_name] = {"name": sub_name, "topic": topic, "consumer": dest, "delivery": "push",
                                     "push_path": path}
        b.origin("subscriptions", sub_name, inst)
        return
    if event_type.startswith(_FIRESTORE):
        if kind != "service":
            b.problem(inst, "destination", "a Firestore trigger in the system file targets a service")
            return
        change = event_type[len(_FIRESTORE):].split(".")[0]
        if change not in ("created", "updated", "deleted", "written"):
            b.problem(inst, "matching_criteria", f"event type {event_type!r} is not a Firestore document change")
            return
        doc = criteria.get("document")
        if doc is None:
            b.problem(inst, "matching_criteria", "a Firestore trigger without a `document` criterion")
            return
        segments = str(doc[0]).split("/")
        if len(segments) != 2 or "{" in segments[0] or "*" in segments[0]:
            b.problem(inst, "matching_criteria.document", f"path pattern {doc[0]!r}: only `collection/{{id}}` "
                                                          "(one top-level collection) maps to the system file")
            return
        database = criteria.get("database", ("(default)", None))[0]
        trig: dict[str, Any] = {"name": name, "collection": segments[0], "events": [change], "target": dest}
        if database != "(default)":
            trig["database"] = database
        if path not in ("/", ""):
            b.note(inst, f"destination path {path}: this version's system file delivers Firestore events to `/`")
        b.triggers[name] = trig
        b.origin("triggers", name, inst)
        b.collections.setdefault(segments[0], {"name": segments[0], **({"database": database} if database != "(default)" else {})})
        return
    b.skipped.append(f"{inst.where}: {inst.addr}: events of type {event_type} have no counterpart in the system file")


@mapper("google_eventarc_trigger")
def _eventarc(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    criteria: dict[str, tuple[Any, Any]] = {}
    for c in b.blocks(inst, "matching_criteria"):
        criteria[b.get(inst, c, "attribute")] = (b.get(inst, c, "value"), b.get(inst, c, "operator", None))
    if "type" not in criteria:
        b.problem(inst, "matching_criteria", "no `type` criterion")
        return
    dest = b.block(inst, "destination")
    if dest is None:
        b.problem(inst, "destination", "is required")
        return
    topic = None
    transport = b.block(inst, "transport")
    if transport is not None and b.block(transport, "pubsub") is not None:
        topic = b.get(inst, b.block(transport, "pubsub"), "topic", None)
    run = b.block(dest, "cloud_run_service")
    if run is not None:
        service = units.last_segment(b.get(inst, run, "service"), "services")
        _route_event(b, inst, name, criteria, topic, ("service", service), b.get(inst, run, "path", "/") or "/")
    elif b.get(inst, dest, "workflow", None) is not None:
        workflow = units.last_segment(b.get(inst, dest, "workflow"), "workflows")
        _route_event(b, inst, name, criteria, topic, ("workflow", workflow), "/")
    else:
        b.skipped.append(f"{inst.where}: {inst.addr}: a destination other than a Cloud Run service or a workflow")


# ---- IAM ----------------------------------------------------------------------------------


@mapper("google_cloud_run_v2_service_iam_member", "google_cloud_run_v2_service_iam_binding",
        "google_cloud_run_service_iam_member", "google_cloud_run_service_iam_binding")
def _invoker(b: Builder, inst: Instance) -> None:
    role = b.get(inst, inst, "role")
    if role != "roles/run.invoker":
        b.skipped.append(f"{inst.where}: {inst.addr}: role {role} (only roles/run.invoker is imported)")
        return
    service = units.last_segment(b.get(inst, inst, "name" if inst.has("name") else "service"), "services")
    members = [b.get(inst, inst, "member")] if inst.has("member") else list(b.get(inst, inst, "members"))
    for m in members:
        b.invokers.setdefault(service, []).append((m, inst))


# ---- stores -------------------------------------------------------------------------------

_BQ_TYPES = {"STRING", "INT64", "INTEGER", "FLOAT64", "FLOAT", "NUMERIC", "BOOL", "BOOLEAN", "BYTES", "DATE",
             "DATETIME", "TIME", "TIMESTAMP", "JSON", "GEOGRAPHY"}


@mapper("google_bigquery_table")
def _bigquery_table(b: Builder, inst: Instance) -> None:
    dataset, table = b.get(inst, inst, "dataset_id"), b.get(inst, inst, "table_id")
    schema = b.get(inst, inst, "schema", None)
    if schema is None:
        b.problem(inst, "schema", "is not set: the system file needs the table's columns")
        return
    try:
        fields = json.loads(schema) if isinstance(schema, str) else schema
    except json.JSONDecodeError as exc:
        b.problem(inst, "schema", f"is not JSON: {exc}")
        return
    columns = []
    for f in fields:
        col_type = str(f.get("type", "")).upper()
        if col_type not in _BQ_TYPES:
            b.note(inst, f"column {f.get('name')}: type {col_type} (nested) is not modelled; left out")
            continue
        col = {"name": f["name"], "type": col_type}
        if f.get("mode", "NULLABLE").upper() != "NULLABLE":
            col["mode"] = f["mode"].upper()
        columns.append(col)
    spec: dict[str, Any] = {"dataset": dataset, "table": table, "columns": columns}
    part = b.block(inst, "time_partitioning")
    if part is not None:
        partition = b.get(inst, part, "field", None)
        if partition is not None:
            spec["partition_field"] = partition
        else:
            b.note(inst, "time_partitioning without a field (ingestion-time partitions) is not modelled")
    ref = f"{dataset}.{table}"
    b.tables[ref] = spec
    b.origin("stores.bigquery", ref, inst)


@mapper("google_storage_bucket")
def _bucket(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    b.buckets[name] = {"name": name}
    b.origin("stores.storage", name, inst)


@mapper("google_storage_notification")
def _bucket_notification(b: Builder, inst: Instance) -> None:
    bucket, topic = b.get(inst, inst, "bucket"), units.last_segment(b.get(inst, inst, "topic"), "topics")
    b.skipped.append(f"{inst.where}: {inst.addr}: notifications from bucket {bucket} to topic {topic} are not "
                     "modelled (nothing publishes them in a rehearsal)")


@mapper("google_firestore_database")
def _firestore_database(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    b.note(inst, f"Firestore database {name}: Terraform does not list collections; those that triggers name "
                 "are declared, add the ones your services write")


@mapper("google_bigquery_dataset")
def _dataset(b: Builder, inst: Instance) -> None:
    """Datasets exist through their tables in the system file."""


@mapper("google_workflows_workflow")
def _workflow(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    source = b.get(inst, inst, "source_contents")
    env = b.get(inst, inst, "user_env_vars", {}) or {}
    b.workflows[name] = WorkflowSource(name, source, {k: str(v) for k, v in env.items()}, inst)


# ---- after every resource -----------------------------------------------------------------


def service_of_url(url: str, services: set[str]) -> tuple[str, str] | None:
    """(service, path) for a URL built from a service's `uri` (or naming a known service)."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    path = parsed.path or "/"
    if host.endswith("." + RUN_HOST):
        return host[: -len(RUN_HOST) - 1], path
    # A literal Cloud Run URL: https://NAME-<hash>-<region>.a.run.app or NAME-<project number>.<region>.run.app
    for svc in sorted(services, key=len, reverse=True):
        if host.startswith(svc + "-") and host.endswith("run.app"):
            return svc, path
    return None


def finish(b: Builder) -> None:
    services = set(b.services)
    for sub_name, endpoint, inst in b.pushes:
        found = service_of_url(endpoint, services)
        if found is None or found[0] not in services:
            b.problem(inst, "push_config.push_endpoint", f"{endpoint!r} is not a Cloud Run service of this "
                                                         "configuration; the system file pushes to its own services")
            b.subscriptions.pop(sub_name, None)
            continue
        b.subscriptions[sub_name]["consumer"] = found[0]
        if found[1] != "/":
            b.subscriptions[sub_name]["push_path"] = found[1]
    for name, src in b.workflows.items():
        wf = translate_workflow(src, services, b)
        if wf is not None:
            if name in b.workflow_topics:
                wf = {"name": wf["name"], "trigger": b.workflow_topics[name], "steps": wf["steps"]}
            b.workflows[name] = wf  # type: ignore[assignment]
            b.origin("workflows", name, src.inst)
    for name in [n for n, w in b.workflows.items() if isinstance(w, WorkflowSource)]:
        del b.workflows[name]
        b.left_out.add(("workflows", name))
    for service, members in b.invokers.items():
        if service not in b.services:
            inst = members[0][1]
            b.problem(inst, "name", f"service {service!r} is not declared in this configuration")
            continue
        listed = sorted({m for m, _ in members})
        if schema_accepts("invokers", listed):
            b.services[service]["invokers"] = listed
        else:
            b.note(members[0][1], f"run.invoker on {service}: {', '.join(listed)}; this version's system file "
                                  "has no invoker allow-list (`invokers:`), so it is not carried")


_SUBSCRIPTION_ORDER = ("name", "topic", "consumer", "delivery", "push_path")


def _ordered(sub: dict) -> dict:
    """Subscriptions read name, topic, consumer, delivery first, as hand-written files do."""
    head = {k: sub[k] for k in _SUBSCRIPTION_ORDER if k in sub}
    return {**head, **{k: v for k, v in sub.items() if k not in head}}


def to_system(b: Builder, name: str, project: str | None) -> dict:
    system: dict[str, Any] = {"name": name, "description": "Imported from Terraform by `surgesim import terraform`."}
    if project:
        system["project"] = project
    b.subscriptions = {k: _ordered(v) for k, v in b.subscriptions.items()}
    for group, items in (("topics", b.topics), ("subscriptions", b.subscriptions), ("services", b.services),
                         ("jobs", b.jobs)):
        if items:
            system[group] = list(items.values())
    stores: dict[str, Any] = {}
    if b.collections:
        stores["firestore"] = list(b.collections.values())
    if b.tables:
        stores["bigquery"] = list(b.tables.values())
    if b.buckets:
        stores["storage"] = list(b.buckets.values())
    if stores:
        system["stores"] = stores
    if b.triggers:
        system["triggers"] = list(b.triggers.values())
    if b.workflows:
        system["workflows"] = list(b.workflows.values())
    return system


def to_plan(b: Builder, name: str) -> dict:
    plan: dict[str, Any] = {"name": f"{name}-terraform",
                            "description": "Capacity as declared in Terraform (scaling, concurrency, cpu, memory)."}
    if b.plan_services:
        plan["services"] = b.plan_services
    if b.plan_jobs:
        plan["jobs"] = b.plan_jobs
    return plan


def map_instance(b: Builder, inst: Instance) -> bool:
    """Map one resource instance; False when its type has no mapper."""
    fn = MAPPERS.get(inst.type)
    if fn is None:
        return False
    try:
        fn(b, inst)
    except _Unresolved:
        pass
    return True


__all__ = ["Builder", "MAPPERS", "map_instance", "finish", "to_system", "to_plan", "service_of_url"]
