"""Terraform resources -> the system file and the plan: the Builder the mappers fill, the
registry of mappers (one small function per resource type, in pubsub.py, cloudrun.py,
eventarc.py, stores.py and workflows.py), and what is done once every resource is read.
What a type carries that the system file cannot say is a note; what cannot be resolved
statically is a problem naming the resource and attribute."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Callable
from urllib.parse import urlparse

from surgesim.importers.terraform import units
from surgesim.importers.terraform.expr import contains_unknown, materialise
from surgesim.importers.terraform.resolve import COMPUTED, RUN_HOST, BlockValue, Instance
from surgesim.schema.common import format_duration
from pydantic import TypeAdapter

from surgesim.schema.system import Service, Subscription, Trigger

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
    workflows: dict[str, Any] = field(default_factory=dict)
    """name -> a WorkflowSource until finish() translates it into the system file's terms."""
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


def convert(b: Builder, inst: Instance, attr: str, fn: Callable[[Any], Any], value: Any) -> Any:
    try:
        return fn(value)
    except (ValueError, TypeError) as exc:
        b.problem(inst, attr, str(exc))
        raise _Unresolved from None


def duration(b: Builder, inst: Instance, attr: str, value: Any) -> str:
    return format_duration(convert(b, inst, attr, units.seconds, value))


MAPPERS: dict[str, Callable[[Builder, Instance], None]] = {}


def mapper(*types: str):
    def register(fn: Callable[[Builder, Instance], None]):
        for t in types:
            MAPPERS[t] = fn
        return fn

    return register


def schema_accepts(model: str, field_name: str, value: Any) -> bool:
    """Whether this version's `model` (Service, Subscription, Trigger) has `field_name` and
    takes `value` for it. Fields other branches add (an invoker allow-list, push and
    trigger identities, env) are carried once the schema has them, never assumed."""
    info = {"Service": Service, "Subscription": Subscription, "Trigger": Trigger}[model].model_fields.get(field_name)
    if info is None:
        return False
    annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    try:
        TypeAdapter(annotation).validate_python(value)
    except ValueError:  # pydantic's ValidationError is one
        return False
    return True


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
        wf = workflows.translate_workflow(src, services, b)
        if wf is not None:
            if name in b.workflow_topics:
                wf = {"name": wf["name"], "trigger": b.workflow_topics[name], "steps": wf["steps"]}
            b.workflows[name] = wf  # type: ignore[assignment]
            b.origin("workflows", name, src.inst)
    for name in [n for n, w in b.workflows.items() if isinstance(w, workflows.WorkflowSource)]:
        del b.workflows[name]
        b.left_out.add(("workflows", name))
    for service, members in b.invokers.items():
        if service not in b.services:
            inst = members[0][1]
            b.problem(inst, "name", f"service {service!r} is not declared in this configuration")
            continue
        listed = sorted({m for m, _ in members})
        if "invokers" not in Service.model_fields:
            b.note(members[0][1], f"run.invoker on {service}: {', '.join(listed)}; this version's system file "
                                  "has no invoker allow-list (`invokers:`), so it is not carried")
            continue
        taken = [m for m in listed if schema_accepts("Service", "invokers", [m])]
        if taken:
            b.services[service]["invokers"] = taken
        for m in sorted(set(listed) - set(taken)):
            inst = next(i for member, i in members if member == m)
            b.note(inst, f"run.invoker member {m} on {service}: the system file's allow-list does not take "
                         "this kind of member; left out")


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
    store_groups: dict[str, Any] = {}
    if b.collections:
        store_groups["firestore"] = list(b.collections.values())
    if b.tables:
        store_groups["bigquery"] = list(b.tables.values())
    if b.buckets:
        store_groups["storage"] = list(b.buckets.values())
    if store_groups:
        system["stores"] = store_groups
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


# The resource modules register their mappers on import (they import this module's Builder).
from surgesim.importers.terraform import cloudrun, eventarc, pubsub, stores, workflows  # noqa: E402,F401
