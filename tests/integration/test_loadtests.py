"""The load generators for real: Locust headless in its own process against a real HTTP
server on 127.0.0.1 and the real Pub/Sub emulator, and the asyncio fleet driver against
the real Meridian command service on the Firestore emulator."""

from __future__ import annotations

import json
import uuid
from importlib import resources

import psutil
import pytest

from surgesim.loadtests.actions import INTENDED_ATTRIBUTE
from surgesim.loadtests.fleet_driver import run_fleet
from surgesim.loadtests.plan import LivePlan
from surgesim.loadtests.runner import run_locust
from surgesim.loadtests.target import build_app, serve
from surgesim.rundir import RunWriter, load_run
from surgesim.sim.traffic import BREEDS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SYSTEM = """\
name: tiny
project: surgesim-test
topics:
  - {name: %(topic)s}
services:
  - name: api
    routes:
      - {name: hit, path: "/hit/{item_id}"}
"""

SCENARIO = """\
name: tiny
system: system.yaml
seed: 5
duration: 40s
traffic:
  sources:
    - {name: steady, rate: %(rate)s/s, request: {service: api, route: hit}}
    - {name: pings, kind: fleet, vehicles: 200, ping_interval: 10s, publish: {topic: %(topic)s}}
live: {time_scale: 10, rate_scale: 0.5}
"""


def tiny(tmp_path, rate: float = 40, topic: str = "pings"):
    (tmp_path / "system.yaml").write_text(SYSTEM % {"topic": topic})
    (tmp_path / "scenario.yaml").write_text(SCENARIO % {"rate": rate, "topic": topic})
    return tmp_path / "scenario.yaml"


def assert_no_process_mentions(text: str) -> None:
    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if text in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p.pid)
        except psutil.Error:
            pass
    assert not left, f"processes left behind: {left}"


def test_locust_headless_sends_the_schedule_with_intended_times(tmp_path):
    scenario = tiny(tmp_path)
    plan = LivePlan(scenario)  # 20 sends/s to api, 10 pings/s, 4 s of wall time
    out = tmp_path / "locust-run"
    with serve(build_app()) as (url, seen):
        result = run_locust(scenario, {"api": url, "pubsub": url.removeprefix("http://"), "project": "p"}, 4.0, out)
    assert_no_process_mentions(str(out))
    assert result.extra["returncode"] == 0 and not result.extra["killed"]
    steady, pings = result.counts["steady"], result.counts["pings"]
    assert steady["sent"] == steady["ok"] == steady["scheduled"] > 40
    assert pings["sent"] == pings["ok"] == pings["scheduled"] > 15
    assert abs(steady["scheduled"] - plan.expected_count(plan.source("steady"), 0, 4.0)) < 5 * 80 ** 0.5
    hits = [s for s in seen if s["path"].startswith("/hit/")]
    assert len(hits) == steady["sent"]
    assert all(s["intended"] and s["request_id"] for s in hits)
    assert all(s["at"] >= float(s["intended"]) - 0.01 for s in hits)  # never sent before it was due
    assert result.by_route() == {"latency/api.hit": steady["sent"], "publish/pings": pings["sent"]}
    # Locust's own response times are kept beside ours
    assert result.histograms["locust_latency/api.hit"].count == steady["sent"]
    # the rows drop into a run directory
    RunWriter(tmp_path / "run").write_histograms(result.rows)
    (tmp_path / "run" / "summary.json").write_text("{}")
    assert load_run(tmp_path / "run").histogram("latency/api").count == steady["sent"]
    stats = (out / "locust_stats.csv").read_text()
    assert "api.hit" in stats and "publish pings" in stats


def test_locust_latency_counts_queueing_behind_a_slow_server(tmp_path):
    scenario = tiny(tmp_path, rate=60)  # 30 sends/s at a server that does one at a time, 60 ms each
    out = tmp_path / "slow"
    with serve(build_app(delay_s=0.06, serial=True)) as (url, seen):
        result = run_locust(scenario, {"api": url, "pubsub": url.removeprefix("http://"), "project": "p"}, 3.0, out,
                            env={"SURGESIM_MAX_USERS": "2"})
    assert_no_process_mentions(str(out))
    lat, resp = result.histograms["latency/api.hit"], result.histograms["response/api.hit"]
    assert lat.count == result.counts["steady"]["sent"] > 30
    # demand 1.8x capacity: the queue (and the intended-time latency) grows through the run,
    # while each request, once sent, takes about two service times (two users, one slot)
    assert lat.max > 0.5
    assert lat.percentile(90) > 3 * resp.percentile(90)
    assert result.lateness["max"] > 0.3


@pytest.fixture
def telemetry_topic(gcp):
    topic = f"pings-{uuid.uuid4().hex[:8]}"
    pub, sub = gcp.clients.publisher(), gcp.clients.subscriber()
    topic_path = pub.topic_path(gcp.project, topic)
    sub_path = sub.subscription_path(gcp.project, f"{topic}-check")
    pub.create_topic(name=topic_path)
    sub.create_subscription(name=sub_path, topic=topic_path)
    yield topic, sub, sub_path
    sub.delete_subscription(subscription=sub_path)
    pub.delete_topic(topic=topic_path)


def pull_all(sub, sub_path, expect: int) -> list:
    got, empty = [], 0
    while len(got) < expect and empty < 5:
        resp = sub.pull(subscription=sub_path, max_messages=1000, timeout=10)
        if not resp.received_messages:
            empty += 1
            continue
        got += [m.message for m in resp.received_messages]
        sub.acknowledge(subscription=sub_path, ack_ids=[m.ack_id for m in resp.received_messages])
    return got


def test_locust_telemetry_reaches_the_pubsub_emulator(tmp_path, gcp, telemetry_topic):
    topic, sub, sub_path = telemetry_topic
    scenario = tiny(tmp_path, rate=4, topic=topic)
    out = tmp_path / "ps"
    with serve(build_app()) as (url, _):
        result = run_locust(scenario, {"api": url, "pubsub": gcp.env_vars()["PUBSUB_EMULATOR_HOST"],
                                       "project": gcp.project}, 4.0, out, env=gcp.env_vars())
    assert_no_process_mentions(str(out))
    sent = result.counts["pings"]["ok"]
    assert sent == result.counts["pings"]["scheduled"] > 15
    msgs = pull_all(sub, sub_path, sent)
    assert len(msgs) == sent
    for m in msgs:
        ping = json.loads(m.data)
        assert m.attributes["vehicleId"] == ping["vehicleId"]
        intended = float(m.attributes[INTENDED_ATTRIBUTE])
        # published after it was due (publish_time has ms resolution)
        assert m.publish_time.timestamp() >= intended - 0.01
    assert len({m.attributes[INTENDED_ATTRIBUTE] for m in msgs}) == sent


def test_fleet_driver_drives_the_real_command_service(tmp_path, gcp):
    """dispatch_wave squeezed further (time_scale 800: the delivery wave at wall 6.75 s):
    parcels go created -> assigned -> out for delivery -> delivered through the scenario's
    pools, every command accepted; its `prepare:` writes the parcel stock into Firestore first."""
    from surgesim.services.common.devserver import run_service

    env = gcp.env_vars()
    pub = gcp.clients.publisher()
    for topic in ("vehicle.telemetry", "dispatch.requests"):
        try:
            pub.create_topic(name=pub.topic_path(gcp.project, topic))
        except Exception as exc:  # noqa: BLE001 -- AlreadyExists from an earlier test
            assert "AlreadyExists" in type(exc).__name__ or "409" in str(exc)
    with run_service("surgesim.services.meridian.command:app", env) as command:
        result = run_fleet(None, {"command": command.url, "pubsub": env["PUBSUB_EMULATOR_HOST"], "project": gcp.project,
                                  "firestore_emulator": "http://" + env["FIRESTORE_EMULATOR_HOST"]},
                           8.0, tmp_path / "fleet", time_scale=800, concurrency=16)
    counts = result.counts
    commands = ["create_shipment", "assign_driver", "out_for_delivery", "mark_delivered"]
    assert counts["mark_delivered"]["sent"] > 5  # the wave's deliveries (~12 expected)
    for name in commands:
        c = counts[name]
        assert c["errors"] == 0, (name, c)
        assert c["ok"] == c["sent"] == c.get("status_202", 0)
        assert c["sent"] + c["starved"] == c["scheduled"]
    entries = result.extra["prepare"]["entries"]
    assert all(e["failed"] == 0 for e in entries.values()) and entries["parcels_out_for_delivery"]["ok"] > 5
    assert counts["gps"]["ok"] == counts["gps"]["scheduled"] > 40
    for name in ("dispatch_parcels", "dispatch_vehicles", "dispatch"):  # the saga's requests, templated
        assert counts[name]["errors"] == 0 and counts[name]["ok"] == counts[name]["sent"], (name, counts[name])
    assert result.extra["unfinished"] == 0
    routes = {"create_shipment", "assign_driver", "mark_out_for_delivery", "mark_delivered"}
    assert routes >= {p.split(".")[-1] for p in result.by_route() if p.startswith("latency/command.")}
    assert (tmp_path / "fleet" / "histograms.parquet").exists()


def test_fleet_driver_keeps_up_at_a_small_rate(tmp_path):
    scenario = tiny(tmp_path, rate=40)
    with serve(build_app()) as (url, seen):
        result = run_fleet(scenario, {"api": url, "project": "p"}, 4.0, tmp_path / "keep", sources=["steady"])
    assert set(result.counts) == {"steady"}  # the pings are someone else's (no Pub/Sub endpoint needed)
    assert all(s["path"].startswith("/hit/") for s in seen)
    steady = result.counts["steady"]
    assert steady["ok"] == steady["scheduled"] == len([s for s in seen if s["path"].startswith("/hit/")])
    # keeping up: the median send leaves within a quarter second of its intended time
    assert result.lateness["p50"] < 0.25
    assert result.extra["unfinished"] == 0


def test_locust_sightings_reach_the_real_dogfinder_app(tmp_path, gcp):
    """The locustfile's users post dogfinder_viral.yaml's multipart sightings with a JPEG; the app stores each and
    publishes it (all 201, one message per sighting)."""
    from google.api_core.exceptions import Conflict

    from surgesim.loadtests.runner import LOCUSTFILE
    from surgesim.services.common.devserver import run_service

    try:
        gcp.clients.storage().create_bucket("dogfinder-photos")
    except Conflict:
        pass
    topic = f"sightings-{uuid.uuid4().hex[:8]}"
    pub, sub = gcp.clients.publisher(), gcp.clients.subscriber()
    topic_path, sub_path = pub.topic_path(gcp.project, topic), sub.subscription_path(gcp.project, topic + "-lt")
    pub.create_topic(name=topic_path)
    sub.create_subscription(name=sub_path, topic=topic_path)
    env = {**gcp.env_vars(), "SIGHTINGS_TOPIC": topic, "PHOTO_BUCKET": "dogfinder-photos"}
    out = tmp_path / "dog"
    try:
        with run_service("surgesim.services.dogfinder.app:app", env) as app:
            # dogfinder_viral at 17:00: ~2 sightings/s wall at its live scales
            scenario = resources.files("surgesim.scenarios").joinpath("dogfinder_viral.yaml")
            result = run_locust(str(scenario), {"app": app.url}, 4.0, out, env=env,
                                locustfile=LOCUSTFILE)
        assert_no_process_mentions(str(out))
        c = result.counts["sightings"]
        assert c["sent"] == c["scheduled"] == c.get("status_201", 0) > 2, c
        msgs = pull_all(sub, sub_path, c["sent"])
        assert len(msgs) == c["sent"]
        assert {json.loads(m.data)["breed"] for m in msgs} <= set(BREEDS)
        assert result.histograms["latency/app.post_sighting"].count == c["sent"]
    finally:
        sub.delete_subscription(subscription=sub_path)
        pub.delete_topic(topic=topic_path)


def test_locust_runs_prepare_and_takes_from_its_pool(tmp_path):
    """Locust on its own (no harness): its `prepare:` runs before the clock (a child process),
    the prepared items go into the pool, and the source that takes from it sends each one
    once, with the prepared id in its path; what the pool cannot cover is starved."""
    (tmp_path / "system.yaml").write_text(SYSTEM % {"topic": "pings"})
    (tmp_path / "scenario.yaml").write_text("""\
name: pooled
system: system.yaml
seed: 5
duration: 40s
traffic:
  sources:
    - {name: use, rate: 20/s, take: ready, request: {service: api, route: hit, path_params: {item_id: "{{ item }}"}}}
prepare:
  - name: make
    count: 12
    put: ready
    let: {item: "it-{{ seq }}"}
    request: {service: api, route: hit, path_params: {item_id: "{{ item }}"}, json: {made: "{{ item }}"}}
live: {time_scale: 10, rate_scale: 1}
""")
    with serve(build_app()) as (url, seen):
        result = run_locust(tmp_path / "scenario.yaml", {"api": url, "project": "p"}, 2.0, tmp_path / "out")
    paths = [s["path"] for s in seen]
    made = [f"/hit/it-{i}" for i in range(1, 13)]
    assert sorted(paths[:12]) == sorted(made)  # the prepare phase first
    used = paths[12:]
    assert sorted(used) == sorted(made)  # each prepared item taken once (in the order their answers came)
    c = result.counts["use"]
    assert c["sent"] == c["status_202"] == 12 and c["starved"] == c["scheduled"] - 12 > 10
    assert result.extra["prepare"]["entries"]["make"]["ok"] == 12
    assert result.extra["pools"] == {"ready": 0}
