"""The Cloud Run-style environment each process of a live run gets. Pure: no processes,
no network, so the mapping from system file + plan to variables is unit-tested alone.

Names a service reads (docs/services.md): every external API `foo-bar` becomes
`FOO_BAR_URL` (plus the historical names in ``API_ALIASES``), every other service's
front `<SERVICE>_URL` (plus ``SERVICE_ALIASES``), a pull worker its `SUBSCRIPTION`,
`MAX_OUTSTANDING`, `PULL_STREAMS`, and live-map its `DEBOUNCE_SECONDS`.
"""

from __future__ import annotations

from collections.abc import Mapping

from surgesim.schema import ExternalApi, Plan, System

API_ALIASES: dict[str, tuple[str, ...]] = {
    # the reference reactors name the shipper webhook after what it is, not the API entry
    "client-endpoints": ("CLIENT_WEBHOOK_URL",),
}
SERVICE_ALIASES: dict[str, tuple[str, ...]] = {
    "fleet-allocator": ("ALLOCATOR_URL",),
}

FAKE_APPS = {"sms": "surgesim.services.fakes.gateway:sms_app",
             "billing": "surgesim.services.fakes.gateway:billing_app",
             "generic": "surgesim.services.fakes.gateway:generic_app",
             "embedding": "surgesim.services.fakes.embedding:app"}


def url_var(name: str) -> str:
    """`sms-gateway` -> SMS_GATEWAY_URL (the load generators use the same rule)."""
    return name.upper().replace("-", "_").replace(".", "_") + "_URL"


def api_vars(api_name: str, url: str) -> dict[str, str]:
    return {v: url for v in (url_var(api_name), *API_ALIASES.get(api_name, ()))}


def service_vars(service: str, url: str) -> dict[str, str]:
    return {v: url for v in (url_var(service), *SERVICE_ALIASES.get(service, ()))}


def fake_env(api: ExternalApi, rate_scale: float = 1.0, seed: int = 1, admin_token: str | None = None) -> dict[str, str]:
    """A fake gateway's start-up behaviour from the system file's API entry. The rate limit
    is scaled like the traffic (rate_scale): at 2% of the volume, 2% of the limit bites at
    the same point of the scenario. Latency is not scaled: handlers run in real time."""
    # FAKE_KIND picks the gateway's kind; the embedding fake is a module of its own
    kind = api.fake if api.fake in ("sms", "billing", "generic") else "generic"
    env = {"FAKE_KIND": kind, "FAKE_LATENCY_P50_MS": repr(api.latency.p50 * 1000.0),
           "FAKE_ERROR_RATE": repr(api.error_rate), "FAKE_SEED": str(seed)}
    if api.latency.p99 is not None:
        env["FAKE_LATENCY_P99_MS"] = repr(api.latency.p99 * 1000.0)
    if api.rate_limit is not None:
        env["FAKE_RATE_LIMIT"] = repr(max(api.rate_limit * rate_scale, 0.001))
    if api.tokens_per_minute is not None:
        env["FAKE_TOKENS_PER_MINUTE"] = repr(max(api.tokens_per_minute * rate_scale, 1.0))
    if admin_token:
        env["FAKE_ADMIN_TOKEN"] = admin_token  # the admin API answers only the run
    return env


def pull_subscriptions(system: System, service: str) -> list[str]:
    return [s.name for s in system.subscriptions if s.consumer == service and s.delivery == "pull"]


def process_env(system: System, plan: Plan, service: str, *, emulators: Mapping[str, str],
                api_urls: Mapping[str, str], service_urls: Mapping[str, str],
                pull_emulator_host: str | None = None, extra: Mapping[str, str] | None = None,
                log_level: str = "INFO", front_secret: str | None = None,
                certs_url: str | None = None, time_scale: float = 1.0) -> dict[str, str]:
    """Every variable for one service process (PORT is added by whoever picks the port).

    emulators: the stack's env_vars(); api_urls: api name -> URL (fake or real);
    service_urls: service name -> front URL; pull_emulator_host: where a pull worker's
    Pub/Sub client should connect (a counting proxy) instead of the emulator;
    front_secret: what only its front sends (services/common/runtime.py checks it);
    certs_url: where the run's ID-token keys are published (Google's oauth2/v1/certs format);
    time_scale: the run's scenario seconds per wall second, as SURGESIM_TIME_SCALE, for a
    service that waits on the scenario's clock (a poll interval) rather than on a request's."""
    env = dict(emulators)
    env["GOOGLE_CLOUD_PROJECT"] = system.project
    env["K_SERVICE"] = service  # as Cloud Run sets it
    env["LOG_LEVEL"] = log_level
    env["SURGESIM_TIME_SCALE"] = repr(float(time_scale))
    for api, url in api_urls.items():
        env.update(api_vars(api, url))
    for other, url in service_urls.items():
        if other != service:
            env.update(service_vars(other, url))
    subs = pull_subscriptions(system, service)
    if subs:
        sub = subs[0]
        sp = plan.subscription(sub)
        env["SUBSCRIPTION"] = sub
        env["MAX_OUTSTANDING"] = str(sp.max_outstanding_messages)
        env["PULL_STREAMS"] = str(sp.streams)
        if pull_emulator_host:
            env["PUBSUB_EMULATOR_HOST"] = pull_emulator_host
    if service in plan.debounce:
        env["DEBOUNCE_SECONDS"] = repr(plan.debounce[service])
    if front_secret:
        env["SURGESIM_FRONT_SECRET"] = front_secret
    if certs_url:
        env["SURGESIM_OIDC_CERTS_URL"] = certs_url.rstrip("/") + "/oauth2/v1/certs"
        env["SURGESIM_OIDC_JWKS_URL"] = certs_url.rstrip("/") + "/oauth2/v3/certs"
    env.update(extra or {})
    return env
