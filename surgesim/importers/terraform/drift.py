"""`--check`: does a system file still describe what Terraform declares?

Only what Terraform owns is compared: a topic's retention, a subscription's delivery,
filter, deadlines, retry and dead-letter policy, a job's tasks, a table's columns, which
services, buckets, triggers and workflows exist. What only the system file says (handler
steps, routes, message sizes, external APIs, `app:`/`command:`, a pull subscription's
consumer) is the rehearsal's own and never drift."""

from __future__ import annotations

from typing import Any

from surgesim.schema.system import System

# group -> fields Terraform owns (besides existence). Items are matched by name. A field this
# version's schema lacks (an allow-list, an identity) reads as unset on both sides.
_OWNED: dict[str, tuple[str, ...]] = {
    "topics": ("retention",),
    "subscriptions": ("topic", "delivery", "filter", "ack_deadline", "retry", "dead_letter", "retention",
                      "ordering", "bigquery", "service_account"),
    "services": ("invokers",),
    "jobs": ("tasks", "parallelism", "task_timeout", "max_retries"),
    "triggers": ("collection", "events", "target", "database", "service_account"),
    "workflows": ("trigger",),
    "stores.bigquery": ("columns", "partition_field"),
    "stores.storage": (),
}
_PUSH_OWNED = ("consumer", "push_path")


def _items(system: System, group: str) -> dict[str, dict]:
    if group.startswith("stores."):
        raw = getattr(system.stores, group.split(".", 1)[1])
    else:
        raw = getattr(system, group)
    out = {}
    for item in raw:
        data = item.model_dump(mode="json")
        key = item.ref if group == "stores.bigquery" else item.name
        out[key] = data
    return out


def _show(value: Any) -> str:
    if isinstance(value, float):
        from surgesim.schema.common import format_duration
        return format_duration(value)
    if value is None:
        return "(unset)"
    return repr(value) if isinstance(value, str) else str(value)


def _compare(path: str, ours: Any, theirs: Any, out: list[str], origin: str) -> None:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for k in list(dict.fromkeys([*ours, *theirs])):
            _compare(f"{path}.{k}", ours.get(k), theirs.get(k), out, origin)
        return
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs) and all(
            isinstance(x, dict) for x in ours + theirs):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _compare(f"{path}[{i}]", a, b, out, origin)
        return
    if ours != theirs:
        out.append(f"{path}: system file {_show(ours)}, Terraform {_show(theirs)}{origin}")


def drift(system_file: System, terraform: System, origins: dict[tuple[str, str], str],
          left_out: set[tuple[str, str]] = frozenset()) -> list[str]:
    """One readable line per disagreement; empty when they agree. `left_out` names what
    Terraform declares but the import could not carry: not compared."""
    out: list[str] = []
    for group, fields in _OWNED.items():
        ours, theirs = _items(system_file, group), _items(terraform, group)
        for name in ours.keys() - theirs.keys():
            if (group, name) in left_out:
                continue
            out.append(f"{group}.{name}: in the system file, not in Terraform")
        for name in theirs.keys() - ours.keys():
            origin = origins.get((group, name))
            out.append(f"{group}.{name}: in Terraform{f' ({origin})' if origin else ''}, not in the system file")
        for name in sorted(ours.keys() & theirs.keys()):
            a, b = ours[name], theirs[name]
            origin = origins.get((group, name))
            suffix = f"  ({origin})" if origin else ""
            owned = fields + (_PUSH_OWNED if group == "subscriptions" and "push" in (a.get("delivery"), b.get("delivery")) else ())
            for field in owned:
                _compare(f"{group}.{name}.{field}", a.get(field), b.get(field), out, suffix)
    # Collections Terraform implies (through triggers) must be declared; others are the file's own.
    declared = {c.name for c in system_file.stores.firestore}
    for c in terraform.stores.firestore:
        if c.name not in declared:
            out.append(f"stores.firestore.{c.name}: a trigger in Terraform watches it, not declared in the system file")
    return sorted(out, key=lambda line: line.split(":")[0])
