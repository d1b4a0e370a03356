"""A service reachable only through its front (the run's front secret) and a fake whose
admin API answers only the run's token (in-process ASGI; tests/integration/test_live_auth.py
does both on real processes)."""

from __future__ import annotations

from fastapi import Request
from fastapi.testclient import TestClient

from surgesim.services.common.runtime import create_app
from surgesim.services.fakes.gateway import build_app

SMS = {"to": "+447700900123", "body": "hello"}


def echo_app():
    app = create_app("echo")

    @app.post("/pubsub")
    async def pubsub(request: Request) -> dict:
        return {"headers": sorted(request.headers.keys()), "auth": request.headers.get("authorization")}

    return app


def test_without_the_front_secret_only_healthz_answers(monkeypatch):
    monkeypatch.setenv("SURGESIM_FRONT_SECRET", "s3cret")
    with TestClient(echo_app()) as c:
        assert c.get("/healthz").status_code == 200  # readiness probes need no secret
        assert c.post("/pubsub", json={}).status_code == 403
        assert c.post("/pubsub", json={}, headers={"x-surgesim-front-secret": "wrong"}).status_code == 403
        r = c.post("/pubsub", json={}, headers={"x-surgesim-front-secret": "s3cret", "authorization": "Bearer a.b.c"})
    assert r.status_code == 200
    # the handler sees what Cloud Run would pass on: Authorization, not the harness's header
    assert "x-surgesim-front-secret" not in r.json()["headers"] and r.json()["auth"] == "Bearer a.b.c"


def test_without_a_secret_configured_the_service_is_open(monkeypatch):
    monkeypatch.delenv("SURGESIM_FRONT_SECRET", raising=False)
    with TestClient(echo_app()) as c:
        assert c.post("/pubsub", json={}).status_code == 200


def test_the_fakes_admin_api_needs_the_runs_token():
    with TestClient(build_app("sms", admin_token="run-token")) as c:
        ok = {"authorization": "Bearer run-token"}
        for method, path, body in (("PUT", "/admin/behaviour", {"outage": True}), ("GET", "/admin/behaviour", None),
                                   ("GET", "/admin/stats", None), ("POST", "/admin/reset", None)):
            assert c.request(method, path, json=body).status_code == 401, path
            assert c.request(method, path, json=body, headers={"authorization": "Bearer guess"}).status_code == 403, path
        assert c.get("/admin/behaviour", headers=ok).json()["outage"] is False  # the refused PUT changed nothing
        # the API itself (what the services call) needs no admin token
        assert c.post("/v1/messages", json=SMS).status_code == 201
        assert c.get("/admin/stats", headers=ok).json()["effects"] == 1
        assert c.put("/admin/behaviour", json={"outage": True}, headers=ok).json()["outage"] is True
