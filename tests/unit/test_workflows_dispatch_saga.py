"""Meridian's dispatch saga, from its Workflows YAML, against real HTTP servers on 127.0.0.1
standing in for the allocator, the route optimiser, command, the SMS gateway and Pub/Sub's
REST publish: the happy path, and the compensation when the optimiser is down."""

import base64
import json
from pathlib import Path

import pytest

from surgesim.workflows import Executor, load

from .workflows_http import ScriptedServer

SAGA = Path(__file__).resolve().parents[2] / "scenarios" / "systems" / "meridian-dispatch.workflow.yaml"
PUBLISH = "/v1/projects/surgesim-local/topics/dispatch.requests:publish"


@pytest.fixture
def deps():
    servers = {name: ScriptedServer() for name in ("allocator", "optimizer", "command", "sms", "pubsub")}
    servers["allocator"].on("POST", "/reservations", (201, {"vehicleId": "v-7", "driverId": "d-7"}))
    servers["allocator"].on("POST", "/reservations/d-1/release", (200, {"released": True}))
    servers["optimizer"].on("POST", "/optimise", (200, {"route": ["p-1"]}))
    servers["command"].on("POST", "/parcels/p-1/assign", (202, {"accepted": True}))
    servers["sms"].on("POST", "/v1/messages", (200, {"id": "m-1"}))
    servers["pubsub"].on("POST", PUBLISH, (200, {"messageIds": ["1"]}))
    yield servers
    for s in servers.values():
        s.close()


def saga(deps, tmp_path):
    env = {"ALLOCATOR_URL": deps["allocator"].url, "ROUTE_OPTIMIZER_URL": deps["optimizer"].url,
           "COMMAND_URL": deps["command"].url, "SMS_GATEWAY_URL": deps["sms"].url,
           "PUBSUB_URL": deps["pubsub"].url, "GOOGLE_CLOUD_PROJECT_ID": "surgesim-local"}
    sleeps: list[float] = []
    ex = Executor(load(SAGA), name="dispatch", env=env, sleep=sleeps.append,
                  identity_token=lambda aud: f"token-for-{aud}", record_path=tmp_path / "dispatch.jsonl")
    return ex, sleeps


def pubsub_event(request: dict) -> dict:
    """The CloudEvent Eventarc gives a workflow for a Pub/Sub message."""
    data = base64.b64encode(json.dumps(request).encode()).decode()
    return {"type": "google.cloud.pubsub.topic.v1.messagePublished",
            "data": {"message": {"data": data, "attributes": {}}, "subscription": "dispatch-sub"}}


def test_happy_path_reserve_optimise_assign_confirm(deps, tmp_path):
    ex, sleeps = saga(deps, tmp_path)
    out = ex.run(pubsub_event({"dispatchId": "d-1", "parcelId": "p-1"}))
    ex.close()
    assert out.state == "SUCCEEDED", out.error
    assert out.result == {"dispatchId": "d-1", "state": "succeeded", "vehicleId": "v-7"}
    reserve = deps["allocator"].hits("POST", "/reservations")[0]
    assert reserve["body"] == {"dispatchId": "d-1"} and reserve["headers"]["Idempotency-Key"] == "dispatch-d-1-reserve"
    assert reserve["headers"]["Authorization"] == f"Bearer token-for-{deps['allocator'].url}/reservations"
    assert deps["optimizer"].hits("POST", "/optimise")[0]["body"] == {"dispatchId": "d-1", "vehicleId": "v-7",
                                                                      "parcelIds": ["p-1"]}
    assert deps["command"].hits("POST", "/parcels/p-1/assign")[0]["body"] == {"driverId": "d-7", "vehicleId": "v-7"}
    assert "d-1" in deps["sms"].hits("POST", "/v1/messages")[0]["body"]["body"]
    assert not deps["allocator"].hits("POST", "/reservations/d-1/release")
    assert not deps["pubsub"].requests and sleeps == []
    record = json.loads((tmp_path / "dispatch.jsonl").read_text())
    assert record["state"] == "SUCCEEDED"
    steps = [s["step"] for s in record["steps"]]
    assert steps.index("main.steps.reserve") < steps.index("main.steps.rest.try.steps.optimise") \
        < steps.index("main.steps.rest.try.steps.assign") < steps.index("main.steps.rest.try.steps.confirm")


def test_optimiser_down_releases_the_vehicle_and_requeues(deps, tmp_path):
    deps["optimizer"].close()  # dependency outage: connection refused
    ex, sleeps = saga(deps, tmp_path)
    out = ex.run(pubsub_event({"dispatchId": "d-1", "parcelId": "p-1"}))
    ex.close()
    assert out.state == "SUCCEEDED", out.error
    assert out.result == {"dispatchId": "d-1", "state": "compensated", "failedStep": "optimise",
                          "requeuedAs": "d-1-r1"}
    assert sleeps == [2.0, 4.0]  # optimise: 2 retries, backoff 2 s doubling
    assert len(deps["allocator"].hits("POST", "/reservations/d-1/release")) == 1
    assert not deps["command"].requests and not deps["sms"].requests
    published = deps["pubsub"].hits("POST", PUBLISH)[0]["body"]["messages"][0]
    assert json.loads(base64.b64decode(published["data"])) == {
        "dispatchId": "d-1-r1", "parcelId": "p-1", "driverId": None, "requeues": 1, "originalId": "d-1"}
    assert published["attributes"] == {"dispatchId": "d-1-r1", "parcelId": "p-1", "requeues": "1"}


def test_failed_reserve_requeues_without_release_and_gives_up_after_max_requeues(deps, tmp_path):
    deps["allocator"].on("POST", "/reservations", (409, {"error": "no vehicle"}))
    ex, sleeps = saga(deps, tmp_path)
    out = ex.run({"dispatchId": "d-1-r3", "parcelId": "p-1", "requeues": 3, "originalId": "d-1"})
    assert out.result == {"dispatchId": "d-1-r3", "state": "compensated", "failedStep": "reserve", "requeuedAs": None}
    assert len(deps["allocator"].hits("POST", "/reservations")) == 4 and sleeps == [1.0, 2.0, 4.0]
    assert not deps["allocator"].hits("POST", "/reservations/d-1-r3/release") and not deps["pubsub"].requests
    ex.close()


def test_compensation_failing_fails_the_execution(deps, tmp_path):
    deps["command"].on("POST", "/parcels/p-1/assign", (400, {"error": "bad driver"}))
    deps["pubsub"].on("POST", PUBLISH, (503, {}))
    ex, _ = saga(deps, tmp_path)
    out = ex.run({"dispatchId": "d-1", "parcelId": "p-1"})
    ex.close()
    assert out.state == "FAILED" and out.error["code"] == 503
    assert len(deps["command"].hits("POST", "/parcels/p-1/assign")) == 1  # a 400 is not retried
    assert len(deps["pubsub"].hits("POST", PUBLISH)) == 6  # 1 + 5 retries
    assert json.loads((tmp_path / "dispatch.jsonl").read_text())["state"] == "FAILED"
