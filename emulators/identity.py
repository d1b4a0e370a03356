"""Who may call whom: Google-shaped OIDC identity tokens signed by a per-run local key.

Pub/Sub push (with a push ``service_account``) and Eventarc send each request with
``Authorization: Bearer <JWT>``: an RS256 ID token Google signs for the subscription's or
trigger's service account. The claims (Pub/Sub's "authenticate push subscriptions" page
shows one): ``iss`` https://accounts.google.com, ``aud`` the push endpoint (or the
configured audience), ``azp`` and ``sub`` the service account's numeric unique id,
``email`` the service account, ``email_verified`` true, ``iat``, ``exp`` = iat + 1 h.

:class:`Issuer` makes such tokens with a key made for the run (never Google's), so the
local Cloud Run front can check them as Cloud Run checks ``run.invoker`` and a handler
can verify them with google-auth against the certificates the harness serves
(:func:`certs_app`: ``/oauth2/v1/certs`` PEM certificates as Google's
``https://www.googleapis.com/oauth2/v1/certs``, ``/oauth2/v3/certs`` a JWKS).
Tokens are cached per (audience, account) until 5 minutes before expiry, as Google's
senders reuse a token, and a verified token's claims are remembered until it expires:
measured on this 2-core machine, signing costs ~450 us of CPU and a full check ~115 us,
a remembered one ~3 us (``python bench/bench_identity.py``); at the push bridge's
~4,300 msg/s an unremembered check alone would take half a core.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from dataclasses import dataclass

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

GOOGLE_ISSUER = "https://accounts.google.com"
#: google-auth accepts both spellings of Google's issuer.
GOOGLE_ISSUERS = (GOOGLE_ISSUER, "accounts.google.com")
TOKEN_LIFETIME_S = 3600
REFRESH_BEFORE_S = 300
LEEWAY_S = 5
#: What Cloud Run forwards instead of the signature of a token it has checked itself.
SIGNATURE_REMOVED = "SIGNATURE_REMOVED_BY_GOOGLE"
ALL_USERS = "allUsers"
ALL_AUTHENTICATED_USERS = "allAuthenticatedUsers"


class InvalidToken(ValueError):
    """The token is missing, malformed, not signed by this run's key, expired, or for
    another audience."""


def unique_id(email: str) -> str:
    """A stable 21-digit numeric id for a service account (Google's ``sub``/``azp`` are
    the account's unique id, digits, never the email)."""
    return "1" + str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:20]


@dataclass(frozen=True)
class Checked:
    """The outcome of an invoker check: HTTP status (200 = allowed) and why."""

    status: int
    reason: str
    email: str | None = None


class Issuer:
    """One run's signing key: issues, verifies and publishes ID tokens. Thread-safe."""

    def __init__(self, *, lifetime_s: int = TOKEN_LIFETIME_S, clock=time.time) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self._key.public_key()
        der = self.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = hashlib.sha1(der).hexdigest()  # Google's kids are 40 hex digits too
        self.lifetime_s = lifetime_s
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._verified: dict[str, dict] = {}  # token -> its claims, once its signature checked out
        self._lock = threading.Lock()
        self.issued = 0

    # ---- issuing --------------------------------------------------------------------------
    def claims(self, audience: str, email: str, now: float | None = None) -> dict:
        iat = int(self.clock() if now is None else now)
        uid = unique_id(email)
        return {"aud": audience, "azp": uid, "email": email, "email_verified": True,
                "exp": iat + self.lifetime_s, "iat": iat, "iss": GOOGLE_ISSUER, "sub": uid}

    def token(self, audience: str, email: str) -> str:
        now = self.clock()
        with self._lock:
            got = self._cache.get((audience, email))
            if got is not None and got[1] - REFRESH_BEFORE_S > now:
                return got[0]
        claims = self.claims(audience, email, now)
        tok = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})
        with self._lock:
            self._cache[(audience, email)] = (tok, claims["exp"])
            self.issued += 1
        return tok

    # ---- checking -------------------------------------------------------------------------
    def verify(self, token: str, audiences: list[str] | None = None) -> dict:
        """The claims of a token this run signed; InvalidToken otherwise. ``audiences``:
        accepted ``aud`` values or URL prefixes (Cloud Run accepts its service URL and
        any URL under it, e.g. a push endpoint's path); None skips the audience check."""
        claims = self._verified.get(token)
        if claims is None:
            try:
                # expiry is checked below, on the same clock for fresh and remembered tokens
                claims = jwt.decode(token, self.public_key, algorithms=["RS256"], issuer=GOOGLE_ISSUERS,
                                    options={"verify_aud": False, "verify_exp": False,
                                             "require": ["exp", "iat", "iss", "aud"]})
            except jwt.PyJWTError as exc:
                raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
            if len(self._verified) >= 10_000:  # tokens are few (one per audience and account): a bound, not an LRU
                self._verified.clear()
            self._verified[token] = claims
        if not isinstance(claims["exp"], (int, float)) or claims["exp"] + LEEWAY_S < time.time():
            self._verified.pop(token, None)
            raise InvalidToken("ExpiredSignatureError: the token has expired")
        if audiences is not None:
            aud = str(claims.get("aud", ""))
            if not any(aud == a or aud.startswith(a.rstrip("/") + "/") for a in audiences):
                raise InvalidToken(f"audience {aud!r} is not this service ({', '.join(audiences)})")
        return claims

    def check_invoker(self, authorization: str | None, invokers: frozenset[str] | None,
                      audiences: list[str] | None) -> Checked:
        """Cloud Run's ``run.invoker`` check on one request's bearer token: 200 allowed,
        401 no token or one that does not verify, 403 a valid identity not on the list.
        ``invokers`` None or containing allUsers: no check (a public service)."""
        if invokers is None or ALL_USERS in invokers:
            return Checked(200, "public")
        if not authorization or not authorization.startswith("Bearer "):
            return Checked(401, "no bearer token")
        try:
            claims = self.verify(authorization[len("Bearer "):].strip(), audiences)
        except InvalidToken as exc:
            return Checked(401, str(exc))
        email = claims.get("email")
        if ALL_AUTHENTICATED_USERS in invokers:
            return Checked(200, "authenticated", email)
        if email and claims.get("email_verified") and (f"serviceAccount:{email}" in invokers
                                                       or f"user:{email}" in invokers):
            return Checked(200, "invoker", email)
        return Checked(403, f"{email or 'this identity'} may not invoke this service (run.invoker)", email)

    # ---- publishing -----------------------------------------------------------------------
    def jwks(self) -> dict:
        """The public key as Google's ``oauth2/v3/certs``."""
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.public_key))
        return {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def certs(self) -> dict[str, str]:
        """{kid: PEM certificate} as Google's ``oauth2/v1/certs`` (google-auth's default
        format for ``id_token.verify_token``)."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "surgesim local run issuer")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.public_key)
                .serial_number(int(self.kid[:16], 16)).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=7)).sign(self._key, hashes.SHA256()))
        return {self.kid: cert.public_bytes(serialization.Encoding.PEM).decode()}


def identity_headers(issuer: Issuer | None, audience: str, service_account: str | None) -> dict[str, str]:
    """The ``authorization`` header Pub/Sub push and Eventarc add to a request for
    ``service_account`` (none without an issuer or an account: an unauthenticated push)."""
    if issuer is None or not service_account:
        return {}
    return {"authorization": "Bearer " + issuer.token(audience, service_account)}


def strip_signature(authorization: str) -> str:
    """The Authorization value Cloud Run forwards after checking it: the same header and
    claims, the signature replaced (so the container cannot replay the token)."""
    scheme, _, tok = authorization.partition(" ")
    parts = tok.split(".")
    if len(parts) != 3:
        return authorization
    return f"{scheme} {parts[0]}.{parts[1]}.{SIGNATURE_REMOVED}"


def certs_app(issuer: Issuer):
    """An ASGI app publishing the run's keys where a handler's verifier can fetch them."""
    v1 = json.dumps(issuer.certs()).encode()
    v3 = json.dumps(issuer.jwks()).encode()

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/")
        body, status = {"/oauth2/v1/certs": (v1, 200), "/oauth2/v3/certs": (v3, 200)}.get(path, (b"not found\n", 404))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"public, max-age=3600")]})
        await send({"type": "http.response.body", "body": body})

    return app


# ---- the identities a system file declares (defaults in docs/bridges.md) ----------------------
def push_service_account(sub, project: str) -> str:
    """A push subscription's identity: its ``service_account`` or a per-subscription default."""
    return sub.service_account or f"{sub.name}-push@{project}.iam.gserviceaccount.com"


def trigger_service_account(trigger, project: str) -> str:
    """A trigger's identity: its ``service_account`` or a per-trigger default."""
    return trigger.service_account or f"{trigger.name}-trigger@{project}.iam.gserviceaccount.com"


def invokers_of(system, service: str) -> frozenset[str] | None:
    """The members holding run.invoker on ``service``; None when it is public.

    Declared ``invokers`` win (``allUsers`` among them: public). Undeclared, a service with
    routes is public (users call it), and one without routes that receives pushes or
    trigger events is private to exactly those subscriptions' and triggers' identities,
    as a deployment granting each push/trigger account run.invoker would be; anything
    else stays public."""
    svc = next((s for s in system.services if s.name == service), None)
    if svc is not None and svc.invokers is not None:
        members = frozenset(svc.invokers)
        return None if ALL_USERS in members else members
    if svc is not None and svc.routes:
        return None
    members = {f"serviceAccount:{push_service_account(s, system.project)}"
               for s in system.subscriptions if s.delivery == "push" and s.consumer == service}
    members |= {f"serviceAccount:{trigger_service_account(t, system.project)}"
                for t in system.triggers if t.target == service}
    return frozenset(members) or None
