"""Who may call whom, on a live run of Meridian's notification reactor (push-only, the only
SMS caller) and the fake SMS gateway (SystemRunner on the session's emulators), and on a
user's own public `command:` handler that verifies the tokens itself with google-auth
against the certificates the run publishes. The first:

* the reactor's front checks run.invoker: no token 401, a token of another key 401, a valid
  token for an identity that is not the push subscription's 403;
* its own port refuses everything without the run's front secret (403), even a valid push;
* the fake gateway's admin API refuses calls without the run's admin token (401/403);
* and the push bridge's own pushes, signed for the subscription's account, get through:
  one published event is exactly one SMS, the refused requests none."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import httpx
import pytest

from surgesim.emulators.identity import Issuer
from surgesim.live import SystemRunner
from surgesim.schema import System, load_system
from tests.integration.bridges_support import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MERIDIAN = load_system(ROOT / "scenarios" / "systems" / "meridian.yaml")
PUSHER = "notify-push@surgesim-test.iam.gserviceaccount.com"


def notification_only() -> System:
    """meridian.yaml cut down to the notification path, with a declared push identity."""
    sub = MERIDIAN.subscription("notification-sub").model_copy(update={"retry": None, "service_account": PUSHER})
    hold = MERIDIAN.subscription("notification-dlq-hold")
    return MERIDIAN.model_copy(update={
        "topics": [MERIDIAN.topic("logistics.events"), MERIDIAN.topic("notification.dlq")],
        "subscriptions": [sub, hold], "services": [MERIDIAN.service("notification")], "triggers": [],
        "workflows": [], "jobs": [], "external_apis": [MERIDIAN.api("sms-gateway")]})


def delivered_event(pid: str) -> tuple[dict, dict]:
    data = {"eventType": "ParcelDelivered", "parcelId": pid,
            "parcel": {"parcelId": pid, "recipient": {"phone": "+447700900123"}}}
    return data, {"eventType": "ParcelDelivered", "eventId": f"ev-{pid}", "parcelId": pid}


def envelope(pid: str) -> dict:
    data, attrs = delivered_event(pid)
    return {"message": {"data": base64.b64encode(json.dumps(data).encode()).decode(), "attributes": attrs,
                        "messageId": f"m-{pid}", "publishTime": "2026-01-01T00:00:00Z"},
            "subscription": "projects/surgesim-test/subscriptions/notification-sub"}


def test_only_the_push_identity_through_the_front_and_only_the_run_at_the_fakes_admin(gcp, tmp_path):
    system = notification_only()
    with SystemRunner(system, None, gcp.state_dir, log_dir=tmp_path / "logs", purge=True) as run:
        endpoint = run.urls["notification"] + "/pubsub"
        raw = run.raw_urls["notification"] + "/pubsub"
        http = httpx.Client(trust_env=False, timeout=15)

        def push(url: str, token: str | None = None, **headers) -> int:
            if token:
                headers["authorization"] = f"Bearer {token}"
            return http.post(url, json=envelope(uuid.uuid4().hex[:8]), headers=headers).status_code

        # through the front: Cloud Run's run.invoker check
        assert push(endpoint) == 401
        assert push(endpoint, Issuer().token(endpoint, PUSHER)) == 401  # not this run's key
        assert push(endpoint, run.issuer.token(endpoint, "intruder@surgesim-test.iam.gserviceaccount.com")) == 403
        # around the front: the service's own port, even with a valid token, even with a guessed secret
        assert push(raw) == 403
        assert push(raw, run.issuer.token(endpoint, PUSHER)) == 403
        assert push(raw, **{"x-surgesim-front-secret": "guess"}) == 403
        assert http.get(run.raw_urls["notification"] + "/metrics").status_code == 403
        harness = run.service_get(run.procs["notification"], "/metrics")  # the harness sends the secret
        assert harness.status_code == 200 and harness.json().get("received", 0) == 0

        # the fake's admin API: an outage or a counter reset only from the run
        admin = run.fakes["sms-gateway"] + "/admin"
        assert http.put(admin + "/behaviour", json={"outage": True}).status_code == 401
        assert http.put(admin + "/behaviour", json={"outage": True},
                        headers={"authorization": "Bearer guess"}).status_code == 403
        assert http.post(admin + "/reset").status_code == 401
        assert http.get(admin + "/stats").status_code == 401
        assert run.fake_admin("sms-gateway", "GET", "/admin/behaviour").json()["outage"] is False

        # the real path: Pub/Sub push with the subscription's identity gets through
        pid = uuid.uuid4().hex[:8]
        data, attrs = delivered_event(pid)
        base = f"http://{gcp.endpoint('pubsub')}/v1/projects/{system.project}"
        http.post(f"{base}/topics/logistics.events:publish", json={"messages": [
            {"data": base64.b64encode(json.dumps(data).encode()).decode(), "attributes": attrs}]}).raise_for_status()
        assert wait_until(lambda: run.fake_stats("sms-gateway")["effects"] == 1, timeout=30)
        stats = run.fake_stats("sms-gateway")
        assert stats["per_key"] == {f"notification-ev-{pid}": 1}  # the refused pushes sent nothing
        assert run.fronts.stats()["notification"]["unauthorized"] == 3
        assert run.bridges.push["notification-sub"].counters.acked == 1
        assert run.service_metrics("notification")["received"] == 1
        http.close()


VERIFIER = r'''
"""A user's own push handler that verifies the ID token itself, as Pub/Sub's sample does:
google-auth's verify_token, with the certificates URL from the environment (Google's
default when it is unset)."""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from google.auth.transport import requests as g_requests
from google.oauth2 import id_token

CERTS = os.environ.get("SURGESIM_OIDC_CERTS_URL", "https://www.googleapis.com/oauth2/v1/certs")
OUT = os.environ["VERIFIED_LOG"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        token = (self.headers.get("authorization") or "").removeprefix("Bearer ")
        try:
            claims = id_token.verify_token(token, g_requests.Request(), certs_url=CERTS)
            status = 204
        except Exception as exc:  # any failure to verify: refuse, as the sample does
            claims, status = {"error": type(exc).__name__}, 401
        with open(OUT, "a") as f:
            f.write(json.dumps(claims) + "\n")
        self.send_response(status); self.send_header("content-length", "0"); self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''


def test_a_users_own_handler_verifies_the_push_tokens_with_google_auth(gcp, tmp_path):
    """A public `command:` service (invokers: [allUsers]) checks the tokens itself against
    the certificates the run publishes; the front passes them on whole."""
    import sys

    script = tmp_path / "verifier.py"
    script.write_text(VERIFIER)
    log = tmp_path / "verified.jsonl"
    system = System.model_validate({
        "name": "verify", "project": "surgesim-test",
        "topics": [{"name": "verify-topic"}],
        "subscriptions": [{"name": "verify-sub", "topic": "verify-topic", "consumer": "verifier",
                           "delivery": "push", "push_path": "/push"}],
        "services": [{"name": "verifier", "command": [sys.executable, str(script)], "invokers": ["allUsers"]}]})
    with SystemRunner(system, None, gcp.state_dir, log_dir=tmp_path / "logs", purge=True,
                      service_env={"verifier": {"VERIFIED_LOG": str(log)}}) as run:
        http = httpx.Client(trust_env=False, timeout=15)
        base = f"http://{gcp.endpoint('pubsub')}/v1/projects/{system.project}"
        http.post(f"{base}/topics/verify-topic:publish", json={"messages": [
            {"data": base64.b64encode(b'{"n": %d}' % i).decode()} for i in range(3)]}).raise_for_status()
        assert wait_until(lambda: run.bridges.push["verify-sub"].counters.acked == 3, timeout=30)
        # the same handler refuses a token the run did not sign (the front, public, let it through)
        forged = Issuer().token(run.urls["verifier"] + "/push", "verify-sub-push@surgesim-test.iam.gserviceaccount.com")
        assert http.post(run.urls["verifier"] + "/push", json={}, headers={"authorization": f"Bearer {forged}"}).status_code == 401
        front_url = run.urls["verifier"]
        http.close()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    verified = [c for c in lines if "email" in c]
    assert len(lines) == 4 and len(verified) == 3 and "error" in lines[-1]  # the forged one, last
    assert {(c["email"], c["aud"], c["iss"]) for c in verified} == {
        ("verify-sub-push@surgesim-test.iam.gserviceaccount.com", front_url + "/push", "https://accounts.google.com")}
