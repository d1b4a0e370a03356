"""BigQuery tables, Cloud Storage buckets (and their notifications), Firestore databases."""

from __future__ import annotations

import json
from typing import Any

from surgesim.importers.terraform import units
from surgesim.importers.terraform.mapping import Builder, mapper
from surgesim.importers.terraform.resolve import Instance

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
