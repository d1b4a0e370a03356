"""`surgesim live` serves Prometheus metrics while it runs: ci_spike shortened to ~20 wall
seconds (time_scale 60, rate_scale 0.2) on its default free port, scraped twice mid-run:
the documented metric names are there and the fronts' request counter grew between the
scrapes; after the run the port is closed and every process the run started is gone."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_live_ci_spike import LiveRun

pytestmark = pytest.mark.integration

NAMES = {"surgesim_run_elapsed_seconds", "surgesim_topic_published", "surgesim_subscription_acked",
         "surgesim_subscription_dead_lettered", "surgesim_subscription_backlog_messages",
         "surgesim_subscription_oldest_unacked_age_seconds", "surgesim_front_requests", "surgesim_front_rejected",
         "surgesim_front_errors", "surgesim_front_instances", "surgesim_front_request_duration_seconds"}


def _scrape(url: str) -> dict[str, list]:
    r = httpx.get(url, trust_env=False, timeout=10)
    r.raise_for_status()
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def _requests(families: dict[str, list]) -> float:
    return sum(s.value for s in families["surgesim_front_requests"] if s.name == "surgesim_front_requests_total")


def test_metrics_are_served_while_the_run_goes(gcp, tmp_path):
    run = LiveRun(gcp, tmp_path / "run", "--time-scale", "60", "--rate-scale", "0.2")
    try:
        run.wait(until="metrics: http://", timeout=180)
        found = re.search(r"metrics: (http://127\.0\.0\.1:\d+/metrics)", run.text())
        assert found, run.text()[-3000:]
        url = found.group(1)
        deadline = time.monotonic() + 120
        while run.proc.poll() is None and time.monotonic() < deadline:
            first = _scrape(url)
            if _requests(first) > 0:
                break
            run.sample()
            time.sleep(0.5)
        else:
            pytest.fail(f"no request reached a front while the run went:\n{run.text()[-3000:]}")
        time.sleep(3)
        second = _scrape(url)
        assert NAMES <= set(first), sorted(NAMES - set(first))
        assert _requests(second) > _requests(first)
        subs = {s.labels["subscription"] for s in second["surgesim_subscription_dead_lettered"]}
        assert "notification-sub" in subs
        routes = {(s.labels["service"], s.labels["route"])
                  for s in second["surgesim_front_request_duration_seconds"]}
        assert any(svc == "command" for svc, _ in routes), routes
        assert all("{id}" in r or not re.search(r"\d", r) for _, r in routes), routes
        rc = run.wait()
    finally:
        run.kill()
    assert rc in (0, 1), run.text()[-3000:]  # a verdict either way; 2 would be bad input
    with pytest.raises(httpx.TransportError):
        httpx.get(url, trust_env=False, timeout=2)
    run.assert_nothing_left()
