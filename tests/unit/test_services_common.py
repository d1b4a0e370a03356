"""Units of services/common: trace context, JSON logs, push envelopes, claims, and the
reactor factory's answers (with an in-memory claim store; the emulator-backed one is
exercised in tests/integration/test_services_meridian.py)."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from fastapi.testclient import TestClient

from surgesim.services.common import logs, trace
from surgesim.services.common.apis import PermanentError, RetryableError
from surgesim.services.common.idempotency import ClaimState, MemoryClaims
from surgesim.services.common.pubsub_push import PoisonMessage, make_envelope, parse_envelope
from surgesim.services.common.reactor import make_reactor

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_round_trip_and_child_keeps_the_trace():
    ctx = trace.parse_traceparent(TP)
    assert ctx.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and ctx.sampled
    child = ctx.child()
    assert child.trace_id == ctx.trace_id and child.span_id != ctx.span_id
    assert trace.parse_traceparent(child.traceparent) == child


@pytest.mark.parametrize("bad", ["", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "ff-" + "a" * 32 + "-" + "b" * 16 + "-01"])
def test_invalid_traceparent_is_ignored(bad):
    assert trace.parse_traceparent(bad) is None


def test_cloud_run_trace_header_is_understood():
    ctx = trace.from_headers({"x-cloud-trace-context": "105445aa7843bc8bf206b12000100000/1;o=1"})
    assert ctx.trace_id == "105445aa7843bc8bf206b12000100000"


def test_log_lines_are_json_with_the_cloud_logging_trace_field(monkeypatch):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "demo-proj")
    logger = logging.getLogger("surgesim.services.unit-test-json")
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logs.JsonFormatter("unit", "demo-proj"))
    logger.addHandler(handler)
    logger.setLevel("INFO")
    token = trace.current.set(trace.parse_traceparent(TP))
    try:
        logger.warning("hello %s", "world", extra={"parcelId": "p1"})
    finally:
        trace.current.reset(token)
        logger.removeHandler(handler)
    line = json.loads(buf.getvalue())
    assert line["severity"] == "WARNING" and line["message"] == "hello world" and line["service"] == "unit"
    assert line["logging.googleapis.com/trace"] == "projects/demo-proj/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["parcelId"] == "p1"


def test_envelope_parsing():
    env = make_envelope({"eventType": "X", "eventId": "e-data"}, {"traceparent": TP}, message_id="42", delivery_attempt=3)
    ev = parse_envelope(json.dumps(env).encode())
    assert ev.message_id == "42" and ev.delivery_attempt == 3 and ev.event_type == "X"
    assert ev.event_id == "e-data" and ev.traceparent == TP
    # the attribute wins over data; messageId is the last resort
    env["message"]["attributes"]["eventId"] = "e-attr"
    assert parse_envelope(json.dumps(env).encode()).event_id == "e-attr"
    assert parse_envelope(json.dumps(make_envelope(b"", {}, message_id="9")).encode()).event_id == "9"


@pytest.mark.parametrize("body", [
    b"not json",
    b"[]",
    json.dumps({"message": {"data": "e30="}}).encode(),  # no messageId
    json.dumps({"message": {"data": "%%%", "messageId": "1"}}).encode(),
    json.dumps(make_envelope(b"\xff\xfe", {}, "1")).encode(),
    json.dumps(make_envelope(b"[1, 2]", {}, "1")).encode(),
    json.dumps(make_envelope({"a": 1}, {"poison": "true"}, "1")).encode(),
])
def test_poison_envelopes(body):
    with pytest.raises(PoisonMessage):
        parse_envelope(body)


def test_memory_claims_lease_semantics():
    async def go():
        claims = MemoryClaims(lease_s=60)
        first = await claims.claim("e1")
        assert first.state is ClaimState.NEW
        assert (await claims.claim("e1")).state is ClaimState.BUSY
        await claims.release(first, "boom")
        retry = await claims.claim("e1")
        assert retry.state is ClaimState.NEW and retry.attempts == 2
        await claims.complete(retry, {"ok": 1})
        done = await claims.claim("e1")
        assert done.state is ClaimState.DONE and done.result == {"ok": 1}
        expired = MemoryClaims(lease_s=0)
        await expired.claim("e2")
        assert (await expired.claim("e2")).state is ClaimState.NEW  # a dead worker's lease lapses

    asyncio.run(go())


def _reactor(handler, **kw):
    return TestClient(make_reactor("unit", handler, db=object(), claims=MemoryClaims(), **kw), raise_server_exceptions=False)


def _env(event_type="ParcelDelivered", event_id="e1", **attrs):
    return make_envelope({"eventType": event_type}, {"eventType": event_type, "eventId": event_id, **attrs}, "m-" + event_id)


def test_reactor_runs_a_side_effect_once_per_event_id():
    calls = []

    async def handler(ctx, ev):
        calls.append(ev.event_id)
        return {"n": len(calls)}

    with _reactor(handler, side_effect=True) as c:
        assert c.post("/pubsub", json=_env()).json()["status"] == "handled"
        dup = c.post("/pubsub", json={**_env(), "message": {**_env()["message"], "messageId": "other"}})
        assert dup.status_code == 200 and dup.json()["status"] == "duplicate"
        assert c.post("/pubsub", json=_env(event_id="e2")).status_code == 200
        assert c.get("/metrics").json() == {"received": 3, "handled": 2, "duplicate": 1}
    assert calls == ["e1", "e2"]


def test_reactor_nacks_transient_failures_and_releases_the_claim():
    outcomes = [RetryableError("gateway 503"), None]

    async def handler(ctx, ev):
        exc = outcomes.pop(0)
        if exc:
            raise exc
        return "ok"

    with _reactor(handler, side_effect=True) as c:
        assert c.post("/pubsub", json=_env()).status_code == 503
        assert c.post("/pubsub", json=_env()).status_code == 200  # redelivery retries


def test_reactor_refuses_permanent_failures_poison_and_crashes_consistently():
    async def refuse(ctx, ev):
        raise PermanentError("bad phone")

    async def crash(ctx, ev):
        raise KeyError("boom")

    with _reactor(refuse, side_effect=True) as c:
        assert {c.post("/pubsub", json=_env()).status_code for _ in range(3)} == {422}
        assert {c.post("/pubsub", json=_env(poison="true")).status_code for _ in range(3)} == {400}
    with _reactor(crash, side_effect=True) as c:
        assert {c.post("/pubsub", json=_env()).status_code for _ in range(3)} == {500}


def test_reactor_ignores_other_event_types_without_claiming():
    async def handler(ctx, ev):
        raise AssertionError("must not run")

    with _reactor(handler, event_types=("ParcelDelivered",), side_effect=True) as c:
        r = c.post("/pubsub", json=_env("RouteEtaUpdated"))
        assert r.status_code == 200 and r.json()["status"] == "ignored"


def test_bad_pattern_makes_matching_messages_fail(monkeypatch):
    monkeypatch.setenv("BAD_PATTERN", 'hasPrefix(attributes.eventType, "ParcelDel")')

    async def handler(ctx, ev):
        return "ok"

    with _reactor(handler) as c:
        assert c.post("/pubsub", json=_env("ParcelDelivered")).status_code == 500
        assert c.post("/pubsub", json=_env("ParcelAssigned", "e2")).status_code == 200
