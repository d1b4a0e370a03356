"""End to end on the real system: Meridian's and Dog Finder's services as processes behind
Cloud Run fronts, on the session's emulators, through the bridges (SystemRunner).

The subscriptions' retry backoff is shortened (0.1-0.5 s instead of 10-600 s) so that
five delivery attempts of a poison message take about a second, not 150 s; nothing else
of meridian.yaml changes."""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import time
import uuid
from pathlib import Path

import httpx
import pytest

from surgesim.live import SystemRunner
from surgesim.schema import load_plan, load_system

from tests.integration.bridges_support import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MERIDIAN = ROOT / "scenarios" / "systems" / "meridian.yaml"
DOGFINDER = ROOT / "scenarios" / "systems" / "dogfinder.yaml"
# This file found that reactors once shared one idempotency claim per event, so billing's
# claim stopped notification's SMS; claims are now per reactor (services/common/reactor.py).
REACTORS = ("eta", "notification", "billing", "driver-scoring", "pod", "client-webhook")


def fast_retries(system):
    subs = [s.model_copy(update={"retry": s.retry.model_copy(update={"min_backoff": 0.1, "max_backoff": 0.5})})
            if s.retry else s for s in system.subscriptions]
    return system.model_copy(update={"subscriptions": subs})




class PubSub:
    """The emulator's REST API, for the test's own spy subscriptions and publishes."""

    def __init__(self, endpoint: str, project: str) -> None:
        self.base = f"http://{endpoint}/v1/projects/{project}"
        self.project = project
        self.http = httpx.Client(trust_env=False, timeout=30)

    def subscribe(self, topic: str) -> str:
        name = f"spy-{uuid.uuid4().hex[:8]}"
        self.http.put(f"{self.base}/subscriptions/{name}",
                      json={"topic": f"projects/{self.project}/topics/{topic}", "ackDeadlineSeconds": 60}).raise_for_status()
        return name

    def pull(self, sub: str, n: int = 1000) -> list[dict]:
        r = self.http.post(f"{self.base}/subscriptions/{sub}:pull", json={"maxMessages": n, "returnImmediately": True})
        r.raise_for_status()
        got = r.json().get("receivedMessages", [])
        if got:
            self.http.post(f"{self.base}/subscriptions/{sub}:acknowledge",
                           json={"ackIds": [m["ackId"] for m in got]}).raise_for_status()
        return [m["message"] | {"deliveryAttempt": m.get("deliveryAttempt")} for m in got]

    def collect(self, sub: str, until, timeout: float = 30.0) -> list[dict]:
        """Pull (and ack) until ``until(all messages so far)`` is true."""
        seen: list[dict] = []
        wait_until(lambda: seen.extend(self.pull(sub)) or until(seen), timeout=timeout, step=0.1)
        return seen

    def publish(self, topic: str, messages: list[dict]) -> list[str]:
        r = self.http.post(f"{self.base}/topics/{topic}:publish", json={"messages": messages})
        r.raise_for_status()
        return r.json()["messageIds"]

    def delete(self, sub: str) -> None:
        self.http.delete(f"{self.base}/subscriptions/{sub}")


@pytest.fixture(scope="module")
def meridian(gcp, tmp_path_factory):
    system = fast_retries(load_system(MERIDIAN))
    plan = load_plan(ROOT / "scenarios" / "plans" / "baseline.yaml", system)
    runner = SystemRunner(system, plan, gcp.state_dir, log_dir=tmp_path_factory.mktemp("meridian-logs"),
                          purge=True, sample_interval=0.5)
    with runner:
        pubsub = PubSub(gcp.endpoint("pubsub"), system.project)
        spy = pubsub.subscribe("logistics.events")
        yield runner, pubsub, spy
        pubsub.delete(spy)
    import psutil

    pids = [p.pid for p in [*runner.procs.values(), *runner.fake_procs.values()]]
    left = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not left, f"service processes left running: {left}"


def counters(runner) -> dict[str, dict[str, int]]:
    return {r: runner.service_metrics(r) for r in REACTORS}


def settled_counters(runner, quiet: float = 0.5, timeout: float = 30.0) -> dict[str, dict[str, int]]:
    """Counters once they stop moving: a gateway records its call before the reactor that
    made it counts the message as handled, so a snapshot taken in between would be torn."""
    deadline = time.monotonic() + timeout
    last = counters(runner)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = counters(runner)
        if now == last:
            return now
        last = now
    return last


def delta(after: dict, before: dict, reactor: str, key: str) -> int:
    return after[reactor].get(key, 0) - before[reactor].get(key, 0)


def lifecycle(command_url: str, parcel: str) -> dict[str, str]:
    """create -> assign -> out for delivery -> delivered; eventId per event type."""
    events = {}
    with httpx.Client(trust_env=False, timeout=30, base_url=command_url) as c:
        steps = [("/shipments", {"shipperId": "acme", "parcelId": parcel, "weightKg": 2,
                                 "recipient": {"name": "Ada", "phone": "+447700900123"},
                                 "destination": {"lat": 51.5, "lng": -0.12}}),
                 (f"/parcels/{parcel}/assign", {"driverId": "D0007", "vehicleId": "V00007"}),
                 (f"/parcels/{parcel}/out-for-delivery", {}),
                 (f"/parcels/{parcel}/delivered", {"signedBy": "Ada"})]
        for i, (path, body) in enumerate(steps):
            r = c.post(path, json=body, headers={"X-Request-Id": f"{parcel}-{i}"})
            assert r.status_code == 202, r.text
            events[r.json()["eventType"]] = r.json()["eventId"]
    return events


# What each reactor's filter lets through of one parcel's four events.
EXPECTED_HANDLED = {"eta": 2, "notification": 2, "billing": 1, "driver-scoring": 1, "pod": 1, "client-webhook": 3}


def test_mark_delivered_reaches_exactly_the_matching_reactors_and_effects_happen_once(meridian):
    runner, pubsub, spy = meridian
    parcel = f"PE2E{uuid.uuid4().hex[:8]}"
    before = counters(runner)
    events = lifecycle(runner.urls["command"], parcel)

    def settled() -> bool:
        now = counters(runner)
        return all(delta(now, before, r, "handled") >= n for r, n in EXPECTED_HANDLED.items())

    assert wait_until(settled, timeout=30), counters(runner)
    time.sleep(1.0)  # anything extra that was going to arrive has had time to
    after = counters(runner)
    for reactor, n in EXPECTED_HANDLED.items():
        assert delta(after, before, reactor, "handled") == n, (reactor, after[reactor], before[reactor])
        assert delta(after, before, reactor, "ignored") == 0, f"{reactor} got an event its filter excludes"

    # command -> Firestore -> trigger -> publisher -> logistics.events: one message per command
    def mine(msgs):
        return [m for m in msgs if m["attributes"].get("parcelId") == parcel and m["attributes"]["eventType"] in events]

    published = mine(pubsub.collect(spy, lambda msgs: len(mine(msgs)) >= 4))
    by_type = {m["attributes"]["eventType"]: m for m in published}
    assert sorted(by_type) == sorted(events) and len(published) == 4
    assert all(by_type[t]["attributes"]["eventId"] == events[t] for t in events)

    sms = runner.fake_stats("sms-gateway")["per_key"]
    assert sms.get(f"notification-{events['ParcelDelivered']}") == 1
    assert sms.get(f"notification-{events['ParcelOutForDelivery']}") == 1
    billing = runner.fake_stats("billing-api")["per_key"]
    assert billing.get(f"billing-{parcel}") == 1


def test_a_thousand_duplicate_deliveries_cause_no_second_sms_or_charge(meridian):
    runner, pubsub, spy = meridian
    parcel = f"PDUP{uuid.uuid4().hex[:8]}"
    events = lifecycle(runner.urls["command"], parcel)
    key_sms, key_bill = f"notification-{events['ParcelDelivered']}", f"billing-{parcel}"
    assert wait_until(lambda: runner.fake_stats("sms-gateway")["per_key"].get(key_sms) == 1
                      and runner.fake_stats("billing-api")["per_key"].get(key_bill) == 1, timeout=30)
    wanted = events["ParcelDelivered"]
    seen = pubsub.collect(spy, lambda msgs: any(m["attributes"].get("eventId") == wanted for m in msgs))
    original = next(m for m in seen if m["attributes"].get("eventId") == wanted)
    copy = {"data": original["data"], "attributes": original["attributes"]}
    before = settled_counters(runner)
    # 200 republished copies (same eventId; 4 publishes of 50, 2 at a time), each delivered
    # to the 5 reactors whose filter takes ParcelDelivered: 1,000 duplicate deliveries
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        ids = [i for batch in pool.map(lambda _: pubsub.publish("logistics.events", [copy] * 50), range(4))
               for i in batch]
    assert len(set(ids)) == 200
    matching = ("notification", "billing", "pod", "driver-scoring", "client-webhook")

    def delivered() -> int:
        now = counters(runner)
        return sum(delta(now, before, r, "duplicate") + delta(now, before, r, "handled") for r in matching)

    assert wait_until(lambda: delivered() >= 1000, timeout=120, step=1.0), counters(runner)
    time.sleep(1.0)
    assert 1000 <= delivered() <= 1005  # plus the original's five, if still in flight at `before`
    sms, bill = runner.fake_stats("sms-gateway"), runner.fake_stats("billing-api")
    assert sms["per_key"][key_sms] == 1 and bill["per_key"][key_bill] == 1
    assert sms["keys_with_more_than_one_effect"] == 0 and bill["keys_with_more_than_one_effect"] == 0
    after = counters(runner)
    assert delta(after, before, "notification", "handled") == 0 and delta(after, before, "billing", "handled") == 0


def test_a_poison_event_is_dead_lettered_after_exactly_five_attempts(meridian):
    runner, pubsub, spy = meridian
    hold = pubsub.subscribe("eta.dlq")
    try:
        before = counters(runner)
        event_id = f"poison-{uuid.uuid4().hex[:8]}"
        pubsub.publish("logistics.events", [{"data": base64.b64encode(b'{"eventType": "ParcelAssigned"}').decode(),
                                              "attributes": {"eventType": "ParcelAssigned", "eventId": event_id,
                                                             "parcelId": "PPOISON", "poison": "true"}}])
        dead = [m for m in pubsub.collect(hold, lambda ms: any(m["attributes"].get("eventId") == event_id for m in ms),
                                          timeout=60) if m["attributes"].get("eventId") == event_id]
        assert len(dead) == 1
        msg = dead[0]
        assert msg["attributes"]["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
        assert msg["attributes"]["CloudPubSubDeadLetterSourceSubscription"] == "eta-sub"
        after = counters(runner)
        assert delta(after, before, "eta", "poison") == 5
        assert wait_until(lambda: runner.bridges.metrics.totals()["eta-sub"]["dead_lettered"] >= 1, timeout=10)
    finally:
        pubsub.delete(hold)


def test_dogfinder_sighting_lands_in_its_sighting_date_partition(gcp, tmp_path):
    from surgesim.emulators import Clients
    from surgesim.loadtests.actions import photo_jpeg

    system = load_system(DOGFINDER)
    with SystemRunner(system, None, gcp.state_dir, log_dir=tmp_path / "logs", purge=True) as runner:
        sid = f"s-{uuid.uuid4().hex[:10]}"
        day = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)).replace(hour=9, minute=30, second=0, microsecond=0)
        r = httpx.post(runner.urls["app"] + "/sightings", trust_env=False, timeout=30,
                       data={"breed": "beagle", "lat": "51.5", "lng": "-0.12", "seen_at": day.isoformat(),
                             "sighting_id": sid, "sighting_date": day.date().isoformat()},
                       files={"photo": ("dog.jpg", photo_jpeg(), "image/jpeg")})
        assert r.status_code == 201, r.text
        bq = Clients(gcp.env_vars(), project=system.project).bigquery()

        def rows(date: dt.date) -> list:
            q = (f"SELECT sighting_id, breed FROM `{system.project}.dogfinder.sightings` "
                 f"WHERE sighting_date = '{date.isoformat()}' AND sighting_id = '{sid}'")
            return list(bq.query(q, retry=None, timeout=30).result(timeout=30))

        assert wait_until(lambda: len(rows(day.date())) == 1, timeout=60, step=0.5)
        assert rows(day.date())[0]["breed"] == "beagle"
        assert rows(day.date() + dt.timedelta(days=1)) == []
        assert runner.bridges.metrics.totals()["sightings-bigquery"]["acked"] == 1
        # the photo path: the Storage trigger on the bucket tells the photo checker of the upload
        db = Clients(gcp.env_vars(), project=system.project).firestore()

        def photo() -> dict | None:
            return (db.collection("sightings").document(sid).get().to_dict() or {}).get("photo")

        assert wait_until(lambda: photo() is not None, timeout=20)
        rec = photo()
        assert rec["uri"] == r.json()["photo_uri"] and rec["contentType"] == "image/jpeg"
        assert rec["size"] == len(photo_jpeg()) and rec["md5Hash"]
        # one event, answered 2xx (the service writes before it answers: wait for the answer)
        trigger = runner.bridges.storage_triggers["photo-uploaded"]
        assert wait_until(lambda: trigger.counters.sent == 1, timeout=10)
        assert trigger.counters.changes == 1 and trigger.counters.failures == 0
