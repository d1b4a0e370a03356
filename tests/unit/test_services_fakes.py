"""The fake external API: behaviour changed at run time, counting, idempotency replay."""

from __future__ import annotations

import math
import random

import numpy as np
from fastapi.testclient import TestClient

from surgesim.services.fakes.gateway import Behaviour, build_app, lognormal_sampler

SMS = {"to": "+447700900123", "body": "hello"}


def test_lognormal_sampler_hits_the_requested_percentiles():
    sample = lognormal_sampler(200, 600, random.Random(7))
    xs = np.array([sample() for _ in range(40_000)]) * 1000
    assert math.isclose(np.percentile(xs, 50), 200, rel_tol=0.05)
    assert math.isclose(np.percentile(xs, 99), 600, rel_tol=0.10)
    assert lognormal_sampler(0, None, random.Random())() == 0.0
    assert lognormal_sampler(50, None, random.Random())() == 0.05


def test_idempotency_key_replays_the_first_answer_and_is_counted():
    with TestClient(build_app("sms")) as c:
        a = c.post("/v1/messages", json=SMS, headers={"Idempotency-Key": "k1"})
        b = c.post("/v1/messages", json=SMS, headers={"Idempotency-Key": "k1"})
        c.post("/v1/messages", json=SMS, headers={"Idempotency-Key": "k2"})
        c.post("/v1/messages", json=SMS)
        assert a.status_code == b.status_code == 201 and a.json() == b.json()
        assert b.headers["idempotent-replayed"] == "true"
        s = c.get("/admin/stats").json()
    assert s["calls"] == 4 and s["effects"] == 3 and s["replayed"] == 1
    assert s["unique_keys"] == 2 and s["duplicate_calls"] == 1 and s["per_key"] == {"k1": 2, "k2": 1}
    assert s["keys_with_more_than_one_effect"] == 0


def test_behaviour_changes_at_run_time():
    with TestClient(build_app("billing")) as c:
        charge = {"parcelId": "p1", "amountCents": 700}
        assert c.post("/v1/charges", json=charge).status_code == 201
        assert c.put("/admin/behaviour", json={"outage": True}).json()["outage"] is True
        assert c.post("/v1/charges", json=charge).status_code == 503
        c.put("/admin/behaviour", json={"outage": False, "error_rate": 1.0})
        assert c.post("/v1/charges", json=charge).status_code == 500
        c.put("/admin/behaviour", json={"error_rate": 0.0, "rate_limit": 2})
        codes = [c.post("/v1/charges", json=charge).status_code for _ in range(6)]
        assert codes.count(429) >= 3 and codes[0] == 201
        s = c.get("/admin/stats?keys=false").json()
        assert s["outage_rejections"] == 1 and s["errors_injected"] == 1 and s["rate_limited"] == codes.count(429)
        assert "per_key" not in s
        assert c.post("/admin/reset").json()["calls"] == 0


def test_invalid_behaviour_and_requests_are_400():
    with TestClient(build_app("sms")) as c:
        assert c.put("/admin/behaviour", json={"error_rate": 2}).status_code == 400
        assert c.put("/admin/behaviour", json={"latency_p50_ms": 100, "latency_p99_ms": 10}).status_code == 400
        assert c.put("/admin/behaviour", json={"nonsense": 1}).status_code == 400
        assert c.post("/v1/messages", json={"to": "12345", "body": "x"}).status_code == 400
        assert c.post("/v1/messages", content=b"not json").status_code == 400
        assert c.get("/admin/stats").json()["effects"] == 0


def test_timed_outage_ends_by_itself():
    with TestClient(build_app("generic", Behaviour(outage=True, outage_seconds=0.01))) as c:
        import time

        time.sleep(0.05)
        assert c.get("/anything").status_code == 200
        assert c.get("/admin/behaviour").json()["outage"] is False
