"""The live-map updater and the geofence detector as real processes pulling from the
Pub/Sub emulator."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from surgesim.services.common.devserver import run_service

pytestmark = pytest.mark.integration

FENCE = {"id": "depot-test", "circle": {"lat": 51.5, "lng": -0.1, "radius_m": 200}}


def wait_until(predicate, timeout=30.0, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


@pytest.fixture
def telemetry(gcp):
    pub, sub = gcp.clients.publisher(), gcp.clients.subscriber()
    tag = uuid.uuid4().hex[:8]
    names = {"telemetry": f"vehicle.telemetry-{tag}", "events": f"logistics.events-{tag}"}
    paths = {k: pub.topic_path(gcp.project, v) for k, v in names.items()}
    for p in paths.values():
        pub.create_topic(name=p)
    subs = {k: sub.subscription_path(gcp.project, f"{k}-{tag}") for k in ("livemap", "geofence", "check")}
    sub.create_subscription(name=subs["livemap"], topic=paths["telemetry"])
    sub.create_subscription(name=subs["geofence"], topic=paths["telemetry"])
    sub.create_subscription(name=subs["check"], topic=paths["events"])
    yield pub, sub, names, paths, subs
    for s in subs.values():
        sub.delete_subscription(subscription=s)
    for p in paths.values():
        pub.delete_topic(topic=p)


def ping(vid, lat, lng, ts):
    return json.dumps({"vehicleId": vid, "lat": lat, "lng": lng, "speed": 30.0, "heading": 90.0, "ts": ts}).encode()


def test_live_map_debounces_to_the_latest_position(gcp, telemetry):
    pub, sub, names, paths, subs = telemetry
    vid = "V-" + uuid.uuid4().hex[:6]
    env = {**gcp.env_vars(), "SUBSCRIPTION": subs["livemap"], "DEBOUNCE_SECONDS": "1"}
    with run_service("surgesim.services.meridian.livemap:app", env) as svc:
        futures = [pub.publish(paths["telemetry"], ping(vid, 51.5 + i * 1e-4, -0.1, f"2024-05-04T10:00:{i:02d}Z"), vehicleId=vid)
                   for i in range(40)]
        futures.append(pub.publish(paths["telemetry"], b"not json", vehicleId=vid))
        for f in futures:
            f.result(10)
        db = gcp.clients.firestore()
        doc = wait_until(lambda: (d := db.collection("LiveMap").document(vid).get()).exists
                         and d.get("ts") == "2024-05-04T10:00:39Z" and d)
        metrics = wait_until(lambda: (m := httpx.get(svc.url + "/metrics").json()).get("received") == 40 and m)
    assert doc and doc.get("lat") == pytest.approx(51.5 + 39e-4)
    assert metrics["received"] == 40 and metrics["invalid"] >= 1
    assert metrics["docs_written"] <= metrics["flushes"] < 40  # debounced: not one write per ping


def test_geofence_emits_entry_and_exit(gcp, telemetry):
    pub, sub, names, paths, subs = telemetry
    vid = "V-" + uuid.uuid4().hex[:6]
    env = {**gcp.env_vars(), "SUBSCRIPTION": subs["geofence"], "EVENT_TOPIC": names["events"],
           "GEOFENCES": json.dumps([FENCE])}
    track = [(51.51, -0.1), (51.5005, -0.1), (51.5, -0.1), (51.49, -0.1)]  # outside, in, in, out
    with run_service("surgesim.services.meridian.geofence:app", env) as svc:
        for i, (lat, lng) in enumerate(track):  # in order: one vehicle's pings are sequential
            pub.publish(paths["telemetry"], ping(vid, lat, lng, f"2024-05-04T10:00:0{i}Z"), vehicleId=vid).result(10)
            wait_until(lambda: httpx.get(svc.url + "/metrics").json().get("received", 0) > i)
        got = []
        wait_until(lambda: got.extend(sub.pull(subscription=subs["check"], max_messages=10, timeout=5).received_messages)
                   or len(got) >= 2)
    events = [json.loads(m.message.data) for m in got]
    assert [(e["fenceId"], e["direction"]) for e in events] == [("depot-test", "entered"), ("depot-test", "exited")]
    assert all(m.message.attributes["eventType"] == "GeofenceCrossed" for m in got)
    assert events[0]["vehicleId"] == vid

