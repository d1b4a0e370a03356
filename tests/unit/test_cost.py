"""The cost estimate, checked against sums done by hand from prices.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from surgesim.schema import load_system
from surgesim.sim.cost import CATEGORIES, estimate_cost, load_prices

SYSTEMS = Path(__file__).resolve().parents[2] / "scenarios" / "systems"
TIB = 2**40


def test_price_table_is_dated_and_complete():
    p = load_prices()
    assert p["as_of"] and p["currency"] == "USD" and "us-central1" in p["region"]
    assert p["cloud_run"]["vcpu_second"] == pytest.approx(0.000024)
    assert p["pubsub"]["per_tib"] == pytest.approx(40.0)
    assert p["firestore"]["writes_per_100k"] == pytest.approx(0.09)


def test_price_table_missing_a_section_is_refused(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("as_of: '2025-01-01'\ncurrency: USD\ncloud_run: {}\n")
    with pytest.raises(ValueError, match="pubsub"):
        load_prices(bad)


def test_cloud_run_firestore_and_scaling_by_hand():
    totals = {
        "services": {"command": {"requests": 2_000_000, "vcpu_seconds": 10_000, "gib_seconds": 5_000}},
        "firestore": {"parcels": {"reads": 300_000, "writes": 1_000_000}},
    }
    c = estimate_cost(totals, duration_s=3 * 3600)
    # 2M requests x $0.40/M = 0.80; 10,000 vCPU-s x 0.000024 = 0.24; 5,000 GiB-s x 0.0000025 = 0.0125
    assert c["per_run"]["cloud_run"] == pytest.approx(0.80 + 0.24 + 0.0125)
    # 3 x $0.03 + 10 x $0.09 = 0.99
    assert c["per_run"]["firestore"] == pytest.approx(0.99)
    assert c["per_run"]["total"] == pytest.approx(1.0525 + 0.99)
    # A 3 h run is an eighth of a day.
    assert c["per_day"]["total"] == pytest.approx(8 * 2.0425)
    assert c["per_month"]["total"] == pytest.approx(8 * 2.0425 * 30.4167)
    assert set(c["per_day"]) == {*CATEGORIES, "total"}
    assert c["as_of"] == load_prices()["as_of"] and c["currency"] == "USD"


def test_pubsub_counts_publish_and_each_delivery_with_the_1kb_minimum():
    # 1,000,000 messages of 220 bytes: each is billed as 1,000 bytes.
    totals = {"topics": {"vehicle.telemetry": {"published": 1_000_000, "bytes": 220_000_000}},
              "subscriptions": {"a": {"delivered": 1_000_000}, "b": {"delivered": 1_000_000}}}
    c = estimate_cost(totals, duration_s=86400)
    assert c["per_run"]["pubsub"] == pytest.approx(3 * 1e9 / TIB * 40.0)
    # Large messages are billed at their size.
    big = {"topics": {"t": {"published": 1000, "bytes": 5_000_000_000}}}
    assert estimate_cost(big, 86400)["per_day"]["pubsub"] == pytest.approx(5e9 / TIB * 40.0)


def test_system_prices_bigquery_subscriptions_as_export_without_ingest():
    system = load_system(SYSTEMS / "dogfinder.yaml")
    totals = {"topics": {"sightings": {"published": 1000, "bytes": 2_000_000}},
              "subscriptions": {"sightings-bigquery": {"delivered": 1000}, "sightings-matcher": {"delivered": 1100}},
              "bigquery": {"dogfinder.sightings": {"rows": 1000, "bytes": 2_000_000}}}
    c = estimate_cost(totals, 86400, system=system)
    publish = 2e6 / TIB * 40.0               # 2,000 bytes each, above the minimum
    export = 1000 * 2000 / TIB * 50.0        # BigQuery subscription at the export price
    deliver = 1100 * 2000 / TIB * 40.0       # redeliveries are billed too
    assert c["per_run"]["pubsub"] == pytest.approx(publish + export + deliver)
    assert c["per_run"]["bigquery"] == 0.0   # ingest is included in the export price
    without = estimate_cost(totals, 86400)
    assert without["per_run"]["bigquery"] == pytest.approx(2e6 / 2**30 * 0.025)
    assert any("average message size" in n for n in without["notes"])


def test_storage_workflows_and_jobs():
    system = load_system(SYSTEMS / "meridian.yaml")
    totals = {"storage": {"meridian-pod-photos": {"writes": 20_000, "reads": 10_000}},
              "workflows": {"dispatch": {"started": 1000, "succeeded": 990, "compensated": 10, "failed": 0}},
              "jobs": {"embed": {"tasks_run": 10, "tasks_failed": 0, "duration_s": 100, "vcpu_seconds": 1000,
                                 "gib_seconds": 2000}}}
    c = estimate_cost(totals, 86400, system=system)
    assert c["per_run"]["storage"] == pytest.approx(2 * 0.05 + 1 * 0.004)
    # dispatch has 4 steps and 1 compensation: 4,000 + 10 external steps at $0.025 / 1,000
    assert c["per_run"]["workflows"] == pytest.approx(4010 * 0.025 / 1000)
    assert c["per_run"]["cloud_run"] == pytest.approx(1000 * 0.000018 + 2000 * 0.000002)


def test_zero_duration_is_refused():
    with pytest.raises(ValueError):
        estimate_cost({}, 0)
