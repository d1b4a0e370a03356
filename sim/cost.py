"""What a run would cost on Google Cloud at list prices, scaled to a day and a month.

Reads the `totals` block of summary.json (docs/run-directory.md) and the price table in
`prices.yaml` (dated, approximate, free tiers ignored). Usage-based services scale
linearly, so a run of `duration_s` seconds is scaled to a day by 86400 / duration_s:
the day it describes is "this run, repeated". For a scenario that covers only a busy
part of the day, the per-day figure is therefore an upper bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PRICES_PATH = Path(__file__).with_name("prices.yaml")
CATEGORIES = ("cloud_run", "pubsub", "firestore", "bigquery", "storage", "workflows")
TIB = 2.0**40
GIB = 2.0**30


def load_prices(path: str | Path | None = None) -> dict:
    """The price table: {as_of, currency, region, source, cloud_run: {...}, ...}."""
    with open(path or PRICES_PATH, encoding="utf-8") as fh:
        prices = yaml.safe_load(fh)
    missing = [k for k in ("as_of", "currency", *CATEGORIES) if k not in prices]
    if missing:
        raise ValueError(f"{path or PRICES_PATH}: price table lacks {', '.join(missing)}")
    return prices


class _Bill:
    def __init__(self) -> None:
        self.lines: list[dict] = []
        self.notes: list[str] = []

    def add(self, category: str, item: str, quantity: float, unit: str, unit_price: float) -> None:
        if quantity:
            self.lines.append({"category": category, "item": item, "quantity": float(quantity),
                               "unit": unit, "unit_price": float(unit_price),
                               "cost": float(quantity) * float(unit_price)})

    def by_category(self) -> dict[str, float]:
        out = {c: 0.0 for c in CATEGORIES}
        for line in self.lines:
            out[line["category"]] += line["cost"]
        out["total"] = sum(out[c] for c in CATEGORIES)
        return out


def _topic_of_subscription(system: Any) -> dict[str, Any]:
    return {s.name: s for s in system.subscriptions} if system is not None else {}


def estimate_cost(totals: dict, duration_s: float, prices: dict | None = None, system: Any = None) -> dict:
    """Cost of one run and of a day and month at the same rate.

    `system` (a schema System, optional) tells which topic each subscription reads, so
    deliveries are priced at their topic's message size, and which ones are BigQuery
    subscriptions (priced as Pub/Sub export, with no separate BigQuery ingest); without
    it every delivery is priced at the average message size of the run.

    Returns {as_of, currency, region, per_run: {category: cost, total}, per_day, per_month,
    lines: [{category, item, quantity, unit, unit_price, cost}] (per run), notes}."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    p = prices or load_prices()
    bill = _Bill()

    # Cloud Run services (request-based billing): CPU and memory while serving, requests.
    cr = p["cloud_run"]
    for name, svc in sorted((totals.get("services") or {}).items()):
        bill.add("cloud_run", f"{name} vCPU", svc.get("vcpu_seconds", 0.0), "vCPU-s", cr["vcpu_second"])
        bill.add("cloud_run", f"{name} memory", svc.get("gib_seconds", 0.0), "GiB-s", cr["gib_second"])
        bill.add("cloud_run", f"{name} requests", svc.get("requests", 0), "requests",
                 cr["per_million_requests"] / 1e6)

    # Cloud Run Jobs: task time.
    jp = p["cloud_run_jobs"]
    for name, job in sorted((totals.get("jobs") or {}).items()):
        if "vcpu_seconds" in job:
            vcpu, gib = job["vcpu_seconds"], job.get("gib_seconds", 0.0)
        else:
            task_s = job.get("task_seconds")
            if task_s is None:
                task_s = job.get("duration_s", 0.0)
                bill.notes.append(f"job {name}: no task_seconds in totals; priced its duration as one task (a lower bound)")
            vcpu, gib = task_s * jp["default_vcpu"], task_s * jp["default_gib"]
        bill.add("cloud_run", f"job {name} vCPU", vcpu, "vCPU-s", jp["vcpu_second"])
        bill.add("cloud_run", f"job {name} memory", gib, "GiB-s", jp["gib_second"])

    # Pub/Sub throughput: every publish and every delivery, at least 1 KB per request.
    ps = p["pubsub"]
    per_req = max(1, int(ps.get("messages_per_request", 1)))
    floor = float(ps.get("min_request_bytes", 1000))
    topics = totals.get("topics") or {}
    size: dict[str, float] = {}
    for name, t in topics.items():
        n, b = t.get("published", 0), t.get("bytes", 0)
        size[name] = b / n if n else 0.0
        billable = max(b, (n / per_req) * floor)
        bill.add("pubsub", f"publish {name}", billable / TIB, "TiB", ps["per_tib"])
    all_n = sum(t.get("published", 0) for t in topics.values())
    avg = sum(t.get("bytes", 0) for t in topics.values()) / all_n if all_n else floor
    subs = _topic_of_subscription(system)
    if system is None and totals.get("subscriptions"):
        bill.notes.append("no system given: deliveries priced at the run's average message size")
    export_tables: set[str] = set()
    for name, s in sorted((totals.get("subscriptions") or {}).items()):
        n = s.get("delivered", 0)
        spec = subs.get(name)
        msg = size.get(spec.topic, avg) if spec is not None else avg
        export = spec is not None and spec.delivery == "bigquery"
        if export:
            export_tables.add(spec.bigquery.table)
        billable = max(n * msg, (n / per_req) * floor)
        bill.add("pubsub", f"{'export' if export else 'deliver'} {name}", billable / TIB, "TiB",
                 ps["export_per_tib"] if export else ps["per_tib"])

    # Firestore operations.
    fs = p["firestore"]
    for name, c in sorted((totals.get("firestore") or {}).items()):
        bill.add("firestore", f"{name} reads", c.get("reads", 0), "reads", fs["reads_per_100k"] / 1e5)
        bill.add("firestore", f"{name} writes", c.get("writes", 0), "writes", fs["writes_per_100k"] / 1e5)
        bill.add("firestore", f"{name} deletes", c.get("deletes", 0), "deletes", fs["deletes_per_100k"] / 1e5)

    # BigQuery: Storage Write API ingest (BigQuery subscriptions' ingest is in Pub/Sub's export price).
    bq = p["bigquery"]
    step_tables = _tables_written_by_steps(system)
    for name, t in sorted((totals.get("bigquery") or {}).items()):
        if name in export_tables and name not in step_tables:
            continue
        bill.add("bigquery", f"{name} ingest", t.get("bytes", 0) / GIB, "GiB", bq["storage_write_per_gib"])
        bill.add("bigquery", f"{name} queries", t.get("bytes_scanned", 0) / TIB, "TiB", bq["query_per_tib"])

    # Cloud Storage operations.
    st = p["storage"]
    for name, b in sorted((totals.get("storage") or {}).items()):
        bill.add("storage", f"{name} writes", b.get("writes", 0), "ops", st["writes_per_10k"] / 1e4)
        bill.add("storage", f"{name} reads", b.get("reads", 0), "ops", st["reads_per_10k"] / 1e4)

    # Workflows steps: calls to services and HTTP APIs are external steps.
    wp = p["workflows"]
    flows = {w.name: w for w in system.workflows} if system is not None else {}
    for name, w in sorted((totals.get("workflows") or {}).items()):
        if "steps" in w:
            steps = w["steps"]
        elif name in flows:
            steps = w.get("started", 0) * len(flows[name].steps) + w.get("compensated", 0) * len(flows[name].compensations)
        else:
            steps = w.get("started", 0)
            bill.notes.append(f"workflow {name}: no step count; priced one step per execution (a lower bound)")
        bill.add("workflows", f"{name} steps", steps, "steps", wp["external_steps_per_1k"] / 1e3)

    per_run = bill.by_category()
    day = 86400.0 / duration_s
    month = day * float(p.get("days_per_month", 30.4167))
    return {
        "as_of": str(p["as_of"]),
        "currency": p["currency"],
        "region": p.get("region", ""),
        "per_run": per_run,
        "per_day": {k: v * day for k, v in per_run.items()},
        "per_month": {k: v * month for k, v in per_run.items()},
        "lines": bill.lines,
        "notes": bill.notes,
    }


def _tables_written_by_steps(system: Any) -> set[str]:
    if system is None:
        return set()
    out: set[str] = set()
    steps = [st for svc in system.services for st in svc.steps]
    steps += [st for svc in system.services for r in svc.routes for st in r.steps]
    steps += [st for job in system.jobs for st in job.steps]
    for st in steps:
        if st.kind == "bigquery" and st.spec.table:
            out.add(st.spec.table)
    return out


__all__ = ["CATEGORIES", "PRICES_PATH", "estimate_cost", "load_prices"]
