"""The live traffic model and the load generators' wire format, without servers.

(Locust itself is never imported here: it monkey-patches the whole test process with gevent.)"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from surgesim.loadtests import actions
from surgesim.loadtests.actions import (
    INTENDED_ATTRIBUTE,
    INTENDED_HEADER,
    Payloads,
    publish_body,
    publish_url,
    stamp,
)
from surgesim.loadtests.fleet_driver import FleetDriver
from surgesim.loadtests.plan import LivePlan, endpoints_from_env, missing_endpoints
from surgesim.loadtests.recorder import Recorder, read_result
from surgesim.loadtests.shape import RateShape
from surgesim.rundir import RunWriter, load_run
from surgesim.sim import traffic

SYSTEM = """\
name: tiny
project: tiny-local
topics:
  - {name: pings}
services:
  - name: api
    routes:
      - {name: hit, path: "/hit/{item_id}"}
      - {name: post_sighting, path: /sightings, response_status: 201}
"""

SCENARIO = """\
name: tiny
system: system.yaml
seed: 3
duration: 600s
traffic:
  sources:
    - {name: steady, rate: %(rate)s/s, request: {service: api, route: hit}}
    - {name: pings, kind: fleet, vehicles: 100, ping_interval: 10s, publish: {topic: pings}}
    - {name: sightings, rate: 1/s, request: {service: api, route: post_sighting}}
  waves:
    - {name: surge, at: 300s, duration: 120s, multiply: {steady: 4}}
live: {time_scale: 10, rate_scale: 0.5}
"""


def tiny(tmp_path, rate: float = 50) -> LivePlan:
    (tmp_path / "system.yaml").write_text(SYSTEM)
    (tmp_path / "scenario.yaml").write_text(SCENARIO % {"rate": rate})
    return LivePlan(tmp_path / "scenario.yaml")


@pytest.fixture(scope="module")
def wave_plan() -> LivePlan:
    return LivePlan()  # the built-in dispatch_wave.yaml


# ---- the shape -------------------------------------------------------------------------------


def test_shape_rate_is_rate_series_compressed_and_scaled(wave_plan):
    plan, shape = wave_plan, RateShape(wave_plan)
    ts, rs = plan.time_scale, plan.rate_scale
    assert (ts, rs) == (60.0, 0.02)
    dt_scenario, n = 30.0, 360  # the whole 3 h morning in 30 s scenario steps
    # each source at its own rate_scale when it has one (the dispatch sources are sent in full)
    expected = sum(traffic.rate_series(plan.exp, s.source, 0.0, dt_scenario, n) * plan.scale_of(s) for s in plan.sources)
    assert {s.name for s in plan.sources if plan.scale_of(s) != rs} == {"dispatch", "dispatch_parcels", "dispatch_vehicles"}
    wall_mid = (np.arange(n) + 0.5) * dt_scenario / ts
    got = np.array([shape.target_rate(t) for t in wall_mid])
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_wave_arrives_at_its_compressed_time(wave_plan):
    plan, shape = wave_plan, RateShape(wave_plan)
    gps = plan.source("gps")
    delivered = plan.source("mark_delivered")
    # dispatch_wave: at 90m for 9m, ramp 30s -> wall 90 s .. 99 s with time_scale 60
    assert plan.waves_wall() == [{"name": "dispatch_wave", "start_s": 90.0, "end_s": 99.0}]
    before, plateau, after = 89.9, 95.0, 99.1
    assert plan.wall_rate(gps, plateau) == pytest.approx(5100 * 0.02)
    assert plan.wall_rate(delivered, plateau) == pytest.approx(900 * 0.02)
    assert plan.wall_rate(gps, before) < 0.5 * plan.wall_rate(gps, plateau)
    assert plan.wall_rate(delivered, before) < 0.01 * plan.wall_rate(delivered, plateau)
    assert plan.wall_rate(delivered, after) < 0.01 * plan.wall_rate(delivered, plateau)
    # the pool grows ahead of the wave and HTTP users follow the rate
    assert shape.users_needed(95.0)["http"] > shape.users_needed(60.0)["http"]
    assert shape.users_needed(89.0)["http"] == shape.users_needed(95.0)["http"]  # 2 s lookahead


def test_scales_can_be_overridden(wave_plan):
    plan = LivePlan(wave_plan.scenario_path, time_scale=30, rate_scale=0.1)
    assert plan.duration_s == 360.0
    assert plan.waves_wall()[0]["start_s"] == 180.0
    assert plan.wall_rate(plan.source("gps"), 190.0) == pytest.approx(510.0)
    with pytest.raises(ValueError):
        LivePlan(wave_plan.scenario_path, rate_scale=2.0)


# ---- the schedule ----------------------------------------------------------------------------


def test_schedule_counts_are_poisson_around_the_expected(tmp_path):
    plan = tiny(tmp_path)
    steady = plan.source("steady")
    times = np.array([t for t, s in plan.timetable([steady]).all_times()])
    assert np.all(np.diff(times) >= 0)
    assert times.min() >= 0 and times.max() < plan.duration_s
    # 25/s wall for 60 s, x4 during the surge (wall 30..42): 25*48 + 100*12 = 2400
    assert plan.expected_count(steady) == pytest.approx(2400, rel=1e-3)
    assert abs(len(times) - 2400) < 4 * np.sqrt(2400)
    per_s = np.bincount(times[times < 30].astype(int), minlength=30)
    assert 0.5 < per_s.var(ddof=1) / per_s.mean() < 1.6  # Poisson: variance = mean
    surge = np.count_nonzero((times >= 30) & (times < 42))
    assert abs(surge - 1200) < 4 * np.sqrt(1200)


def test_schedule_is_seeded_and_independent_of_other_sources(tmp_path):
    plan = tiny(tmp_path)
    steady = plan.source("steady")
    alone = [t for t, _ in plan.timetable([steady]).all_times()]
    mixed = [t for t, s in plan.timetable().all_times() if s.name == "steady"]
    assert alone == mixed
    assert alone != [t for t, _ in plan.timetable([steady], seed_offset=1).all_times()]


def test_pop_due_hands_out_each_send_once_in_order(tmp_path):
    plan = tiny(tmp_path)
    table = plan.timetable(duration_s=10.0)
    got = []
    for now in np.arange(0.0, 10.5, 0.37):
        due = table.pop_due(float(now))
        assert all(t <= now for t, _ in due)
        got += [t for t, _ in due]
    assert got == sorted(got)
    assert len(got) == sum(table.scheduled.values()) > 0
    assert table.next_time() is None


# ---- what goes on the wire -------------------------------------------------------------------


def test_every_send_carries_its_intended_time(tmp_path):
    plan = tiny(tmp_path)
    p = Payloads(plan, tag="t1")
    intended = 1_700_000_000.123456
    http = p.build(plan.source("steady"), intended)
    assert http.headers[INTENDED_HEADER] == "1700000000.123456" == stamp(intended)
    body = json.loads(http.body)
    assert http.headers["X-Request-Id"] == body["requestId"]
    assert http.path.startswith("/hit/t1") and "{" not in http.path
    ping = p.build(plan.source("pings"), intended, wall_t=1.0)
    data, attrs = ping.message
    assert attrs[INTENDED_ATTRIBUTE] == stamp(intended)
    doc = json.loads(data)
    assert set(doc) == {"vehicleId", "lat", "lng", "speed", "heading", "ts"}
    assert attrs["vehicleId"] == doc["vehicleId"] and doc["ts"].startswith("2023-11-14T22:13:20.123")
    assert 51.0 < doc["lat"] < 52.0


def test_a_batch_of_pings_keeps_each_intended_time(tmp_path):
    plan = tiny(tmp_path)
    p = Payloads(plan, tag="b")
    t0 = 1_700_000_000.0
    due = [(0.1 * i, plan.source("pings")) for i in range(5)] + [(0.55, plan.source("steady"))]
    sends = p.build_due(due, t0)
    assert [s.intended for s in sends] == [t0 + w for w, _ in due]
    for send in sends[:5]:
        data, attrs = send.message
        assert attrs[INTENDED_ATTRIBUTE] == stamp(send.intended)
        assert json.loads(data)["ts"] == actions._iso(send.intended)
    assert sends[5].headers[INTENDED_HEADER] == stamp(t0 + 0.55)


def test_dogfinder_sightings_are_a_multipart_template_with_a_real_jpeg():
    """dogfinder_viral.yaml says its sightings as a template (no route-name magic)."""
    from importlib import resources

    from PIL import Image

    from surgesim.sim.traffic import BREEDS

    plan = LivePlan(Path(str(resources.files("surgesim.scenarios").joinpath("dogfinder_viral.yaml"))))
    payloads = Payloads(plan, tag="t2")
    sends = [payloads.build(plan.source("sightings"), time.time()) for _ in range(30)]
    send = sends[0]
    ctype = send.headers["Content-Type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    msg = email.parser.BytesParser().parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + send.body)
    parts = {p.get_param("name", header="content-disposition"): p for p in msg.get_payload()}
    assert {"sighting_id", "sighting_date", "seen_at", "breed", "lat", "lng", "requestId", "photo"} <= set(parts)
    assert parts["requestId"].get_payload() == send.headers["X-Request-Id"]
    assert parts["seen_at"].get_payload()[:10] == parts["sighting_date"].get_payload()
    img = Image.open(io.BytesIO(parts["photo"].get_payload(decode=True)))
    assert img.format == "JPEG" and img.size == (96, 72)
    breeds = set()
    for s in sends:
        m = email.parser.BytesParser().parsebytes(b"Content-Type: " + s.headers["Content-Type"].encode()
                                                  + b"\r\n\r\n" + s.body)
        breeds |= {p.get_payload() for p in m.get_payload() if p.get_param("name", header="content-disposition") == "breed"}
    assert breeds <= set(BREEDS) and len(breeds) > 3


def test_rest_publish_body_round_trips():
    msgs = [(json.dumps({"vehicleId": f"V{i:05d}"}).encode(), {INTENDED_ATTRIBUTE: stamp(100.0 + i)}) for i in range(3)]
    body = json.loads(publish_body(msgs))
    assert [base64.b64decode(m["data"]) for m in body["messages"]] == [d for d, _ in msgs]
    assert [m["attributes"] for m in body["messages"]] == [a for _, a in msgs]
    assert publish_url("127.0.0.1:8085", "proj", "vehicle.telemetry") == \
        "http://127.0.0.1:8085/v1/projects/proj/topics/vehicle.telemetry:publish"
    with pytest.raises(ValueError):
        publish_body([(b"x", {})] * 1001)


def test_a_plan_can_send_some_sources_with_their_full_plan_schedule(tmp_path):
    full = tiny(tmp_path)
    part = LivePlan(full.scenario_path, only=["steady"])
    assert [s.name for s in part.sources] == ["steady"]
    assert [t for t, _ in part.timetable().all_times()] == \
        [t for t, s in full.timetable().all_times() if s.name == "steady"]
    with pytest.raises(ValueError, match="nope"):
        LivePlan(full.scenario_path, only=["nope"])


def test_endpoints_from_env(wave_plan):
    env = {"COMMAND_URL": "http://127.0.0.1:9", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085",
           "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8086"}
    ep = endpoints_from_env(wave_plan, env)
    assert ep == {"command": "http://127.0.0.1:9", "pubsub": "127.0.0.1:8085", "project": "meridian-local",
                  "firestore_emulator": "http://127.0.0.1:8086"}
    assert missing_endpoints(wave_plan, ep) == []
    # the prepare: phase writes the parcel stock into Firestore: the emulator is needed too
    assert missing_endpoints(wave_plan, {"project": "p"}) == ["COMMAND_URL", "PUBSUB_EMULATOR_HOST",
                                                              "FIRESTORE_EMULATOR_HOST"]


# ---- latency from the intended time ----------------------------------------------------------


def test_slow_server_latency_includes_the_queueing_delay(tmp_path):
    """One connection, a 20 ms server, a 250/s schedule: sends queue behind each other.
    Response time stays ~20 ms; latency from the intended time grows with the queue."""
    plan = tiny(tmp_path, rate=500)  # 250/s wall; the 1/s sightings and pings ride along
    service_s = 0.02
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        await asyncio.sleep(service_s)
        return httpx.Response(202 if request.url.path != "/sightings" else 201)

    async def go():
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        driver = FleetDriver(plan, {"api": "http://api", "pubsub": "ps:1", "project": "p"}, concurrency=1,
                             client=client)
        try:
            return await driver.run(0.4, preload=False, drain_s=30.0)
        finally:
            await client.aclose()

    result = asyncio.run(go())
    lat, resp = result.histograms["latency/api.hit"], result.histograms["response/api.hit"]
    n = result.counts["steady"]["sent"]
    assert n == result.counts["steady"]["scheduled"] > 50
    assert resp.percentile(50) < 0.25  # ~20 ms each once sent (generous: shared CPU)
    # the k-th queued send waits for the k-1 before it: the last ones wait ~n x 20 ms
    assert lat.max > 0.5 * n * service_s
    assert lat.percentile(50) > 5 * resp.percentile(50)
    assert result.lateness["max"] > 0.4 * n * service_s  # the driver knows it fell behind
    stamps = [float(r.headers[INTENDED_HEADER]) for r in seen if r.url.path.startswith("/hit/")]
    assert stamps == sorted(stamps) and len(stamps) == n


# ---- results in the run directory format -----------------------------------------------------


def test_recorder_rows_are_run_directory_histograms(tmp_path):
    rec = Recorder(time_scale=60.0, window_s=1.0)
    for i in range(100):
        rec.record("latency/command.mark_delivered", "mark_delivered", wall_t=i * 0.05, intended=1000.0 + i,
                   sent_at=1000.5 + i, done_at=1000.6 + i, ok=True, status=202)
    rows = rec.rows()
    assert list(rows.columns) == ["time_s", "path", "bucket", "count"]
    assert set(rows.time_s) == {0.0, 60.0, 120.0, 180.0, 240.0}  # wall windows in scenario seconds
    assert set(rows.path) == {"latency/command.mark_delivered", "response/command.mark_delivered", "lateness/loadgen"}
    RunWriter(tmp_path).write_histograms(rows)
    (tmp_path / "summary.json").write_text("{}")
    run = load_run(tmp_path)
    lat = run.histogram("latency/command")
    assert lat.count == 100 and lat.percentile(50) == pytest.approx(0.6, rel=0.01)
    assert run.histogram("response/command.mark_delivered").percentile(99) == pytest.approx(0.1, rel=0.01)
    assert rec.counts["mark_delivered"]["status_202"] == 100


def test_result_written_and_read_back(tmp_path):
    plan = tiny(tmp_path)

    async def handler(request):
        return httpx.Response(202)

    async def go():
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        try:
            return await FleetDriver(plan, {"api": "http://api", "pubsub": "ps:1"}, client=client).run(0.5, preload=False)
        finally:
            await client.aclose()

    result = asyncio.run(go())
    result.write(tmp_path / "out")
    back = read_result(tmp_path / "out")
    assert back.counts == result.counts and back.scales == {"time_scale": 10.0, "rate_scale": 0.5}
    for path, h in result.histograms.items():
        assert back.histograms[path].count == h.count
        assert back.histograms[path].percentile(99) == pytest.approx(h.percentile(99))
    assert actions.photo_jpeg(3)[:2] == b"\xff\xd8"


def test_a_slow_command_server_does_not_hold_up_telemetry(tmp_path):
    """Every HTTP slot busy on a server that never answers in time: the pings are still
    published on schedule (their publish workers are outside the HTTP connection limit)."""
    plan = tiny(tmp_path, rate=500)
    published: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(":publish"):
            published.append(time.time())
            return httpx.Response(200, json={"messageIds": ["1"]})
        await asyncio.sleep(5.0)  # the stuck command server
        return httpx.Response(202)

    async def go():
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        driver = FleetDriver(plan, {"api": "http://api", "pubsub": "ps:1", "project": "p"}, concurrency=2,
                             client=client)
        try:
            return await driver.run(1.0, preload=False, drain_s=0.1)
        finally:
            await client.aclose()

    result = asyncio.run(go())
    pings = result.counts["pings"]
    assert pings["scheduled"] > 5 and pings["ok"] == pings["scheduled"]
    assert result.counts["steady"].get("ok", 0) == 0  # the HTTP sends really were stuck
    assert result.histograms["publish/pings"].percentile(99) < 1.0
