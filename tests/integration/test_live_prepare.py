"""dispatch_wave.yaml's `prepare:` (the parcel stock, as YAML) written into the real
Firestore emulator by the harness's prepare phase (loadtests/prepare.py), against the real
command service: each prepared parcel has the shape of the one the service writes after the
same commands, and the service takes the next lifecycle command on it, sent by the
scenario's own templated sources with the item taken from the pool."""

from __future__ import annotations

import json

import httpx
import pytest

from surgesim.loadtests.actions import Payloads, load_prepared
from surgesim.loadtests.plan import LivePlan
from surgesim.loadtests.prepare import Preparer
from surgesim.services.common.devserver import run_service

pytestmark = pytest.mark.integration

STEPS = [("create_shipment", None, "created"), ("assign_driver", "created", "assigned"),
         ("out_for_delivery", "assigned", "out_for_delivery"), ("mark_delivered", "out_for_delivery", "delivered")]


def shape(value):
    """A document's structure: keys and value types, recursively (values differ per parcel)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


PROJECT = "meridian-local"  # the system file's: the harness gives it to the services and the prepare phase


@pytest.fixture(scope="module")
def clients(gcp):
    from surgesim.emulators import Clients

    return Clients(gcp.env_vars(), project=PROJECT)


@pytest.fixture(scope="module")
def command(gcp):
    with run_service("surgesim.services.meridian.command:app", {**gcp.env_vars(), "GOOGLE_CLOUD_PROJECT": PROJECT}) as svc:
        yield svc


def send(http: httpx.Client, s):
    return http.request(s.method, s.path, content=s.body, headers=s.headers)


def test_prepared_parcels_look_like_the_services_and_take_the_next_command(clients, command, tmp_path):
    plan = LivePlan(rate_scale=0.004)  # dispatch_wave.yaml, thinned to a few dozen parcels
    said: list[str] = []
    prep = Preparer(plan, tmp_path / "prepare.json", say=said.append)
    assert [e.name for e in prep.early] == ["parcels_created", "parcels_assigned", "parcels_out_for_delivery"]
    assert prep.late == []  # Firestore only: all of it before the trigger bridges
    assert plan.exp.system.project == PROJECT
    prep.before_bridges(clients)
    info = json.loads((tmp_path / "prepare.json").read_text())
    counts = {name: e["ok"] for name, e in info["entries"].items()}
    assert counts == {e.name: plan.prepare_count(e) for e in plan.prepare} and all(counts.values())
    assert len(said) == 3 and all(line.startswith("prepare parcels_") for line in said)
    assert {p: len(items) for p, items in info["pools"].items()} == {
        "created": counts["parcels_created"], "assigned": counts["parcels_assigned"],
        "out_for_delivery": counts["parcels_out_for_delivery"]}

    db = clients.firestore()
    run = Payloads(plan, tag="run")  # the generator: its pools loaded from prepare.json
    load_prepared(run.pools, tmp_path / "prepare.json")
    with httpx.Client(base_url=command.url, trust_env=False, timeout=30) as http:
        # a parcel of the service's own, through the same templated commands
        own = Payloads(plan, tag="own")
        for name, _, status in STEPS[:3]:
            s = own.build(plan.source(name), 0.0)
            assert send(http, s).status_code == 202
            own.finish(s, True)
        served = db.collection("parcels").document(s.vars["parcel_id"]).get().to_dict()
        assert served["status"] == "out_for_delivery"
        for name, pool, status in STEPS[1:]:
            item = info["pools"][pool][0]
            prepared = db.collection("parcels").document(item["parcel_id"]).get().to_dict()
            assert prepared["status"] == pool
            same = {k: v for k, v in shape(served).items() if k in shape(prepared)}
            assert shape(prepared) == same, (pool, shape(prepared), shape(served))
            if pool == "out_for_delivery":  # the same status: the same document shape, field for field
                assert shape(prepared) == shape(served)
            # the service takes the next command on it, sent by the scenario's own source
            s = run.build(plan.source(name), 0.0)
            assert s.vars["parcel_id"] == item["parcel_id"]  # the oldest item of the pool first
            r = send(http, s)
            assert r.status_code == 202, r.text
            assert r.json()["status"] == status and r.json()["version"] == prepared["version"] + 1
            assert s.headers["X-Request-Id"] == json.loads(s.body)["requestId"]
        # the delivered one is complete: what the billing reactor reads is there
        delivered = db.collection("parcels").document(info["pools"]["out_for_delivery"][0]["parcel_id"]).get().to_dict()
        assert delivered["priceCents"] == 500 + round(100 * delivered["weightKg"]) and delivered["recipient"]["phone"]
        # a prepared parcel in the wrong state is refused: the documents are what the service checks
        s = run.build(plan.source("mark_delivered"), 0.0)
        assigned_item = {**s.vars, "parcel_id": info["pools"]["assigned"][1]["parcel_id"]}
        wrong = run.templates["mark_delivered"].render(0.0, assigned_item)
        assert http.post(wrong.path, content=wrong.body, headers=wrong.headers).status_code == 409
