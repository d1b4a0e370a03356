"""Pub/Sub topics and subscriptions (pull, push, BigQuery; Cloud Storage is left out)."""

from __future__ import annotations

from typing import Any

from surgesim.importers.terraform import units
from surgesim.importers.terraform.mapping import Builder, convert, duration, mapper, schema_accepts
from surgesim.importers.terraform.resolve import Instance


@mapper("google_pubsub_topic")
def _topic(b: Builder, inst: Instance) -> None:
    name = b.get(inst, inst, "name")
    topic: dict[str, Any] = {"name": name}
    retention = b.get(inst, inst, "message_retention_duration", None)
    if retention is not None:
        topic["retention"] = duration(b, inst, "message_retention_duration", retention)
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
            if schema_accepts("Subscription", "service_account", account):
                sub["service_account"] = account
            else:
                b.note(inst, f"push_config.oidc_token: pushes carry an OIDC token of {account}; "
                             "this version's system file does not model push identities")
        if b.block(push, "no_wrapper") is not None:
            b.note(inst, "push_config.no_wrapper: the system file pushes the standard envelope")
    elif bq is not None:
        sub["delivery"] = "bigquery"
        table = convert(b, inst, "bigquery_config.table", units.bigquery_table, b.get(inst, bq, "table"))
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
        sub["ack_deadline"] = duration(b, inst, "ack_deadline_seconds", ack)
    retry = b.block(inst, "retry_policy")
    if retry is not None:
        sub["retry"] = {
            "min_backoff": duration(b, inst, "retry_policy.minimum_backoff", b.get(inst, retry, "minimum_backoff", "10s")),
            "max_backoff": duration(b, inst, "retry_policy.maximum_backoff", b.get(inst, retry, "maximum_backoff", "600s")),
        }
    dead = b.block(inst, "dead_letter_policy")
    if dead is not None:
        sub["dead_letter"] = {
            "topic": units.last_segment(b.get(inst, dead, "dead_letter_topic"), "topics"),
            "max_attempts": int(b.get(inst, dead, "max_delivery_attempts", 5)),
        }
    retention = b.get(inst, inst, "message_retention_duration", None)
    if retention is not None:
        sub["retention"] = duration(b, inst, "message_retention_duration", retention)
    if b.get(inst, inst, "enable_message_ordering", False):
        sub["ordering"] = True
    if b.get(inst, inst, "enable_exactly_once_delivery", False):
        b.note(inst, "enable_exactly_once_delivery: not modelled; the rehearsal delivers at least once")
    b.subscriptions[name] = sub
    b.origin("subscriptions", name, inst)
