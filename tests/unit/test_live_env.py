"""The environment each live process gets, from the system file and plan (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from surgesim.emulators.front import FrontSettings
from surgesim.live.env import fake_env, process_env, url_var
from surgesim.schema import Plan, load_plan, load_system

ROOT = Path(__file__).resolve().parents[2]
MERIDIAN = load_system(ROOT / "scenarios" / "systems" / "meridian.yaml")
BASELINE = load_plan(ROOT / "scenarios" / "plans" / "baseline.yaml", MERIDIAN)
EMU = {"PUBSUB_EMULATOR_HOST": "127.0.0.1:1", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:2", "GOOGLE_CLOUD_PROJECT": "x"}
APIS = {"sms-gateway": "http://s", "billing-api": "http://b", "client-endpoints": "http://c"}


def env_of(service, plan=BASELINE, **kw):
    return process_env(MERIDIAN, plan, service, emulators=EMU, api_urls=APIS,
                       service_urls={"command": "http://cmd", "eta": "http://eta"}, **kw)


def test_reactors_get_the_gateway_urls_they_read_and_the_systems_project():
    env = env_of("notification")
    assert env["SMS_GATEWAY_URL"] == "http://s" and env["BILLING_API_URL"] == "http://b"
    assert env["CLIENT_WEBHOOK_URL"] == "http://c"  # the reference reactor's own name for client-endpoints
    assert env["GOOGLE_CLOUD_PROJECT"] == "meridian-local" and env["K_SERVICE"] == "notification"
    assert env["COMMAND_URL"] == "http://cmd" and "SUBSCRIPTION" not in env


def test_a_service_is_not_given_its_own_url_and_pull_workers_get_their_subscription_and_flow_control():
    assert "ETA_URL" not in env_of("eta")
    env = env_of("live-map", pull_emulator_host="127.0.0.1:9")
    assert env["SUBSCRIPTION"] == "telemetry-livemap"
    assert env["MAX_OUTSTANDING"] == "4000" and env["PULL_STREAMS"] == "4"
    assert env["DEBOUNCE_SECONDS"] == "10.0"
    assert env["PUBSUB_EMULATOR_HOST"] == "127.0.0.1:9"  # through the counting proxy
    assert env_of("command", pull_emulator_host="127.0.0.1:9")["PUBSUB_EMULATOR_HOST"] == "127.0.0.1:1"


def test_extra_env_wins():
    assert env_of("eta", extra={"BAD_PATTERN": 'attributes.a = "b"'})["BAD_PATTERN"] == 'attributes.a = "b"'


def test_fake_env_scales_the_rate_limit_like_the_traffic_but_not_the_latency():
    sms = next(a for a in MERIDIAN.external_apis if a.name == "sms-gateway")
    env = fake_env(sms, rate_scale=0.02)
    assert env["FAKE_KIND"] == "sms"
    assert float(env["FAKE_RATE_LIMIT"]) == pytest.approx(sms.rate_limit * 0.02)  # 2% of the contract
    assert float(env["FAKE_LATENCY_P50_MS"]) == 200.0 and float(env["FAKE_LATENCY_P99_MS"]) == 600.0
    assert float(env["FAKE_ERROR_RATE"]) == 0.001


def test_the_front_secret_and_the_runs_certs_reach_the_service_and_the_admin_token_the_fake():
    env = env_of("notification", front_secret="s", certs_url="http://127.0.0.1:7/")
    assert env["SURGESIM_FRONT_SECRET"] == "s"
    assert env["SURGESIM_OIDC_CERTS_URL"] == "http://127.0.0.1:7/oauth2/v1/certs"
    assert env["SURGESIM_OIDC_JWKS_URL"] == "http://127.0.0.1:7/oauth2/v3/certs"
    assert "SURGESIM_FRONT_SECRET" not in env_of("notification")
    sms = next(a for a in MERIDIAN.external_apis if a.name == "sms-gateway")
    assert fake_env(sms, admin_token="t")["FAKE_ADMIN_TOKEN"] == "t" and "FAKE_ADMIN_TOKEN" not in fake_env(sms)


def test_front_settings_for_a_service_the_plan_does_not_name():
    s = FrontSettings.from_plan(Plan(name="empty").service("pod"))
    assert (s.concurrency, s.max_instances, s.cold_start_p50, s.cold_start_p99) == (80, 100, 1.5, 4.0)
    s = FrontSettings.from_plan(BASELINE.service("command"))
    assert (s.min_instances, s.max_instances, s.cold_start_p50) == (2, 40, 1.2)


def test_url_var():
    assert url_var("fleet-allocator") == "FLEET_ALLOCATOR_URL"


def test_the_runs_time_scale_reaches_the_service_for_waits_on_the_scenarios_clock():
    assert env_of("eta")["SURGESIM_TIME_SCALE"] == "1.0"  # a run in real time
    assert float(env_of("eta", time_scale=30)["SURGESIM_TIME_SCALE"]) == 30.0
