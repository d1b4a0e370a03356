"""Eventarc triggers (and a function's event_trigger): Pub/Sub ones become push subscriptions
or a workflow's trigger, Firestore ones the system file's triggers."""

from __future__ import annotations

from typing import Any

from surgesim.importers.terraform import units
from surgesim.importers.terraform.mapping import Builder, mapper, schema_accepts
from surgesim.importers.terraform.resolve import Instance

_FIRESTORE = "google.cloud.firestore.document.v1."
_PUBSUB = "google.cloud.pubsub.topic.v1.messagePublished"


def _identity(b: Builder, inst: Instance, item: dict, model: str, account: str | None) -> None:
    if account is None:
        return
    if schema_accepts(model, "service_account", account):
        item["service_account"] = account
    else:
        b.note(inst, f"service_account {account}: events are delivered with this identity; this version's "
                     "system file does not model it")


def route_event(b: Builder, inst: Instance, name: str, criteria: dict[str, tuple[Any, Any]], topic: str | None,
                target: tuple[str, str], path: str, account: str | None = None) -> None:
    """An event route (Eventarc trigger or a function's event_trigger) into the system file;
    `account` is the identity the events are delivered with."""
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
        _identity(b, inst, b.subscriptions[sub_name], "Subscription", account)
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
        if doc[1] != "match-path-pattern" and not any(c in segments[1] for c in "{*"):
            b.note(inst, f"document {doc[0]!r} is one document; the system file's trigger watches the whole "
                         f"collection {segments[0]}")
        database = criteria.get("database", ("(default)", None))[0]
        trig: dict[str, Any] = {"name": name, "collection": segments[0], "events": [change], "target": dest}
        if database != "(default)":
            trig["database"] = database
        if path not in ("/", ""):
            b.note(inst, f"destination path {path}: this version's system file delivers Firestore events to `/`")
        _identity(b, inst, trig, "Trigger", account)
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
        route_event(b, inst, name, criteria, topic, ("service", service), b.get(inst, run, "path", "/") or "/",
                    b.get(inst, inst, "service_account", None))
    elif b.get(inst, dest, "workflow", None) is not None:
        workflow = units.last_segment(b.get(inst, dest, "workflow"), "workflows")
        route_event(b, inst, name, criteria, topic, ("workflow", workflow), "/")
    else:
        b.skipped.append(f"{inst.where}: {inst.addr}: a destination other than a Cloud Run service or a workflow")
