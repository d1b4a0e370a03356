"""ID tokens as Pub/Sub push and Eventarc send them, the run.invoker check, and who the
system file says may invoke what (emulators/identity.py; no network)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

from surgesim.emulators.identity import (
    SIGNATURE_REMOVED,
    InvalidToken,
    Issuer,
    identity_headers,
    invokers_of,
    push_service_account,
    strip_signature,
)
from surgesim.schema import SchemaError, System, load_system

ROOT = Path(__file__).resolve().parents[2]
MERIDIAN = load_system(ROOT / "scenarios" / "systems" / "meridian.yaml")
SA = "relay-push@p-local.iam.gserviceaccount.com"
AUD = "http://127.0.0.1:9000/pubsub"


class Clock:
    """The issuer's clock (verification reads the real one)."""

    def __init__(self, t: float | None = None) -> None:
        self.t = time.time() if t is None else t

    def __call__(self) -> float:
        return self.t


def test_token_has_googles_header_and_claims():
    issuer = Issuer()
    tok = issuer.token(AUD, SA)
    header = jwt.get_unverified_header(tok)
    assert header == {"alg": "RS256", "kid": issuer.kid, "typ": "JWT"} and len(issuer.kid) == 40
    claims = jwt.decode(tok, options={"verify_signature": False})
    # the claim set of Pub/Sub's documented push token, nothing more
    assert set(claims) == {"aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub"}
    assert claims["aud"] == AUD and claims["email"] == SA and claims["email_verified"] is True
    assert claims["iss"] == "https://accounts.google.com" and claims["exp"] - claims["iat"] == 3600
    assert claims["sub"] == claims["azp"] and claims["sub"].isdigit() and len(claims["sub"]) == 21
    assert identity_headers(issuer, AUD, SA) == {"authorization": f"Bearer {tok}"}
    assert identity_headers(None, AUD, SA) == {} and identity_headers(issuer, AUD, None) == {}


def test_tokens_are_reused_until_five_minutes_before_expiry():
    clock = Clock()
    issuer = Issuer(clock=clock)
    first = issuer.token(AUD, SA)
    clock.t += 3600 - 301
    assert issuer.token(AUD, SA) == first and issuer.issued == 1
    assert issuer.token(AUD + "x", SA) != first  # per audience
    clock.t += 2
    renewed = issuer.token(AUD, SA)
    assert renewed != first and jwt.decode(renewed, options={"verify_signature": False})["iat"] == int(clock.t)


def test_verify_rejects_other_keys_expiry_and_other_audiences():
    clock = Clock()
    issuer = Issuer(clock=clock)
    assert issuer.verify(issuer.token(AUD, SA), ["http://127.0.0.1:9000"])["email"] == SA
    with pytest.raises(InvalidToken):
        issuer.verify(Issuer().token(AUD, SA))
    with pytest.raises(InvalidToken, match="audience"):
        issuer.verify(issuer.token("http://127.0.0.1:90001/pubsub", SA), ["http://127.0.0.1:9000"])  # not a prefix match
    with pytest.raises(InvalidToken):
        issuer.verify("a.b.c")
    expired = Issuer(clock=Clock(time.time() - 3700))  # issued 1 h 1 min ago
    with pytest.raises(InvalidToken, match="Expired"):
        expired.verify(expired.token(AUD, SA))


def test_the_invoker_check_401_403_and_public():
    issuer = Issuer()
    members = frozenset({f"serviceAccount:{SA}"})
    aud = ["http://127.0.0.1:9000"]

    def check(auth, invokers=members):
        return issuer.check_invoker(auth, invokers, aud).status

    assert check(None) == 401 and check("Basic abc") == 401 and check("Bearer junk") == 401
    assert check("Bearer " + issuer.token(AUD, "other@p-local.iam.gserviceaccount.com")) == 403
    assert check("Bearer " + issuer.token(AUD, SA)) == 200
    assert check(None, None) == 200 and check(None, frozenset({"allUsers"})) == 200
    anyone = frozenset({"allAuthenticatedUsers"})
    assert check("Bearer " + issuer.token(AUD, "x@y.iam.gserviceaccount.com"), anyone) == 200
    assert check(None, anyone) == 401


def test_cloud_run_forwards_a_checked_token_without_its_signature():
    tok = Issuer().token(AUD, SA)
    head, claims, _ = tok.split(".")
    assert strip_signature("Bearer " + tok) == f"Bearer {head}.{claims}.{SIGNATURE_REMOVED}"
    assert strip_signature("Bearer opaque") == "Bearer opaque"


def test_google_auth_verifies_the_runs_tokens_against_its_published_certs():
    """A handler's own check: google.oauth2.id_token.verify_token with certs_url pointing at
    the run's certificates (what the harness serves at $SURGESIM_OIDC_CERTS_URL)."""
    from google.oauth2 import id_token

    issuer = Issuer()
    served = {"http://certs/oauth2/v1/certs": issuer.certs(), "http://certs/oauth2/v3/certs": issuer.jwks()}

    class Response:
        def __init__(self, body):
            self.status, self.data, self.headers = 200, json.dumps(body).encode(), {}

    def request(url, method="GET", **kwargs):  # google.auth.transport.Request's interface
        return Response(served[url])

    tok = issuer.token(AUD, SA)
    claims = id_token.verify_token(tok, request, audience=AUD, certs_url="http://certs/oauth2/v1/certs")
    assert claims["email"] == SA and claims["iss"] == "https://accounts.google.com"
    # the JWKS form (Google's oauth2/v3/certs) verifies the same token
    assert id_token.verify_token(tok, request, audience=AUD, certs_url="http://certs/oauth2/v3/certs")["email"] == SA
    with pytest.raises(ValueError):
        id_token.verify_token(Issuer().token(AUD, SA), request, audience=AUD, certs_url="http://certs/oauth2/v1/certs")
    with pytest.raises(ValueError):
        id_token.verify_token(tok, request, audience="http://elsewhere/", certs_url="http://certs/oauth2/v1/certs")


def test_who_may_invoke_what_by_default():
    # routes: public; push-only: exactly the identities of the pushes and triggers to it
    assert invokers_of(MERIDIAN, "command") is None
    assert invokers_of(MERIDIAN, "notification") == frozenset(
        {f"serviceAccount:notification-sub-push@{MERIDIAN.project}.iam.gserviceaccount.com"})
    publisher = [t for t in MERIDIAN.triggers if t.target == "event-publisher"]
    assert publisher and invokers_of(MERIDIAN, "event-publisher") == frozenset(
        {f"serviceAccount:{t.name}-trigger@{MERIDIAN.project}.iam.gserviceaccount.com" for t in publisher})
    sub = MERIDIAN.subscription("notification-sub")
    assert push_service_account(sub, "p") == "notification-sub-push@p.iam.gserviceaccount.com"
    assert push_service_account(sub.model_copy(update={"service_account": SA}), "p") == SA


def test_declared_invokers_win_and_are_validated(tmp_path):
    doc = {"name": "mini", "topics": [{"name": "tasks"}],
           "subscriptions": [{"name": "tasks-push", "topic": "tasks", "consumer": "worker", "delivery": "push",
                              "service_account": SA}],
           "services": [{"name": "worker", "invokers": [f"serviceAccount:{SA}", "serviceAccount:ops@p-local.iam.gserviceaccount.com"]},
                        {"name": "opened", "invokers": ["allUsers"], "routes": []}]}
    system = System.model_validate(doc)
    assert invokers_of(system, "worker") == frozenset({f"serviceAccount:{SA}", "serviceAccount:ops@p-local.iam.gserviceaccount.com"})
    assert invokers_of(system, "opened") is None
    bad = json.loads(json.dumps(doc))
    bad["services"][0]["invokers"] = ["relay@p-local"]  # a member needs its kind: serviceAccount:...
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(bad, indent=1))  # JSON is YAML: one field per line
    with pytest.raises(SchemaError, match=r"bad\.yaml:\d+: services\[0\]\.invokers\[0\]"):
        load_system(path)


def test_a_remembered_token_still_expires(monkeypatch):
    issuer = Issuer()
    tok = issuer.token(AUD, SA)
    assert issuer.verify(tok)["email"] == SA  # checked once, then remembered
    assert issuer.verify(tok)["email"] == SA
    later = time.time() + 3700
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(InvalidToken):
        issuer.verify(tok)
