"""The live run's parcel stock (surgesim/live/stock.py): how many parcels in which state a
scenario needs, and that each stocked parcel is in the state its command requires."""

from __future__ import annotations

import json
import math
from pathlib import Path


from surgesim.live.stock import build_stock
from surgesim.loadtests.actions import ParcelBook, load_stock, stock_counts
from surgesim.loadtests.plan import LIFECYCLE_ROUTES, LivePlan
from surgesim.services.meridian.model import COMMAND_REQUESTS, PARCELS, TRANSITIONS

MERIDIAN = Path(__file__).resolve().parents[2] / "scenarios" / "systems" / "meridian.yaml"

SCENARIO = """\
name: stocked
system: {system}
seed: 5
duration: 600s
traffic:
  sources:
    - {{name: create, rate: 10/s, request: {{service: command, route: create_shipment}}}}
    - {{name: assign, rate: 10/s, request: {{service: command, route: assign_driver}}}}
    - {{name: out, rate: 10/s, request: {{service: command, route: mark_out_for_delivery}}}}
    - {{name: delivered, rate: 10/s, request: {{service: command, route: mark_delivered}}}}
{waves}
live: {{time_scale: 10, rate_scale: 0.5, locust: false}}
"""

WAVE = "  waves:\n    - {name: rush, at: 300s, duration: 120s, ramp: 0s, multiply: {delivered: 4}}\n"

# the status each lifecycle command needs its parcel in (the command service's table)
NEEDS = {"assign_driver": "created", "mark_out_for_delivery": "assigned", "mark_delivered": "out_for_delivery"}


def plan(tmp_path, waves: str = "") -> LivePlan:
    path = tmp_path / "stocked.yaml"
    path.write_text(SCENARIO.format(system=MERIDIAN, waves=waves))
    return LivePlan(path)


def test_counts_are_each_commands_expected_number_plus_three_sd(tmp_path):
    # 10/s x 600 scenario s x rate_scale 0.5 = 3,000 in the scenario's volume, / time_scale 10 = 300
    want = math.ceil(300 + 3 * math.sqrt(300))
    assert stock_counts(plan(tmp_path)) == {"assign_driver": want, "mark_out_for_delivery": want,
                                            "mark_delivered": want}


def test_a_wave_raises_only_its_commands_stock(tmp_path):
    counts = stock_counts(plan(tmp_path, WAVE))
    extra = 3 * 10 * 120 * 0.5 / 10  # 3 more deliveries a second for 120 s, thinned as above
    assert counts["mark_delivered"] == math.ceil(300 + extra + 3 * math.sqrt(300 + extra))
    assert counts["assign_driver"] == counts["mark_out_for_delivery"] == math.ceil(300 + 3 * math.sqrt(300))


def test_the_wave_scenario_is_stocked_for_its_delivery_surge():
    wave = LivePlan(rate_scale=0.1)  # dispatch_wave.yaml, as measured in docs/benchmarks/live.md
    counts = stock_counts(wave)
    delivered = wave.expected_count(wave.source("mark_delivered"))
    assert counts["mark_delivered"] > delivered > 800  # the wave alone is ~810 at 0.1
    assert counts["mark_out_for_delivery"] < counts["mark_delivered"] / 5


def test_each_stocked_parcel_is_in_the_state_its_command_needs(tmp_path):
    p = plan(tmp_path)
    ready, writes = build_stock(p, "t1")
    assert {r: len(ids) for r, ids in ready.items()} == stock_counts(p)
    parcels = {doc_id: doc for coll, doc_id, doc in writes if coll == PARCELS}
    requests = [doc for coll, _, doc in writes if coll == COMMAND_REQUESTS]
    assert len(parcels) == sum(len(ids) for ids in ready.values())
    for route, ids in ready.items():
        k = LIFECYCLE_ROUTES.index(route)
        event = next(e for e, (status, _) in TRANSITIONS.items() if status == NEEDS[route])
        for pid in ids:
            doc = parcels[pid]
            assert doc["status"] == NEEDS[route]
            assert doc["status"] in TRANSITIONS[_event(route)][1]  # the service would accept the command
            assert doc["version"] == k and doc["eventType"] == event and doc["lastEvent"]["type"] == event
            assert doc["parcelId"] == pid and doc["priceCents"] > 500
    # one command_requests record per command a parcel went through, answers consistent
    assert len(requests) == sum(LIFECYCLE_ROUTES.index(r) * len(ids) for r, ids in ready.items())
    last = {(r["parcelId"], r["response"]["version"]): r for r in requests}
    for pid, doc in parcels.items():
        assert last[(pid, doc["version"])]["response"]["eventId"] == doc["lastEvent"]["id"]
    assert len({doc_id for _, doc_id, _ in writes}) == len(writes)  # no id written twice


def _event(route: str) -> str:
    return {"assign_driver": "ParcelAssigned", "mark_out_for_delivery": "ParcelOutForDelivery",
            "mark_delivered": "ParcelDelivered"}[route]


def test_load_stock_puts_the_stocked_parcels_first(tmp_path):
    book = ParcelBook("run")
    book.finish("assign_driver", "Pown", ok=True)  # a parcel of the run's own, ready for out-for-delivery
    path = tmp_path / "stock.json"
    path.write_text(json.dumps({"counts": {"mark_out_for_delivery": 2}, "seconds": 1.0,
                                "ready": {"mark_out_for_delivery": ["Ps1", "Ps2"]}}))
    info = load_stock(book, path)
    assert info == {"counts": {"mark_out_for_delivery": 2}, "seconds": 1.0}
    assert [book.take("mark_out_for_delivery") for _ in range(4)] == ["Ps1", "Ps2", "Pown", None]
