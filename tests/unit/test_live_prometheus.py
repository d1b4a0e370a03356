"""The live /metrics collector over the run's own counters (in-memory ledgers and front
stats here; the integration test tests/integration/test_live_metrics.py scrapes a real run)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import httpx
from prometheus_client.parser import text_string_to_metric_families

from emulators.front import FrontStats
from emulators.metrics import Ledger
from surgesim.histogram import Histogram
from surgesim.live.prometheus import cumulative_buckets, route_of, serving


def _runner():
    watched, unwatched = Ledger("orders-sub", "orders", observed=True), Ledger("audit-sub", "orders")
    watched.see("m1", time.time() - 4.0, ("k1",))
    watched.see("m2", time.time(), ("k2",))
    watched.settle("m2")
    watched.dead_letter(("k1",))
    watched.see("m3", time.time() - 2.0, ("k3",))
    stats = FrontStats(requests=7, rejected=2, errors=1)
    stats.latency["/orders/4711/pay"] = Histogram()
    stats.latency["/orders/4711/pay"].record([0.003, 0.02, 0.2])
    stats.latency["/orders/4712/pay"] = Histogram()
    stats.latency["/orders/4712/pay"].record([0.7])
    front = SimpleNamespace(stats=stats, instance_count=lambda: 3)
    sampler = SimpleNamespace(published={"orders": 3}, ledgers={"orders-sub": watched, "audit-sub": unwatched})
    return SimpleNamespace(elapsed=lambda: 12.5, bridges=SimpleNamespace(metrics=sampler),
                           fronts=SimpleNamespace(fronts={"api": front}))


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url, trust_env=False).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_route_folds_ids_not_words():
    assert route_of("/orders/4711/pay") == "/orders/{id}/pay"
    assert route_of("/orders/9b2f0c1e-aa/pay") == "/orders/{id}/pay"
    assert route_of("/healthz") == "/healthz"
    assert route_of("/push/notification_sender") == "/push/notification_sender"


def test_buckets_are_cumulative_and_end_with_the_count():
    h = Histogram()
    h.record([0.003, 0.02, 0.2, 0.7, 100.0])
    got = dict(cumulative_buckets(h))
    assert got["0.0025"] == 0 and got["0.005"] == 1 and got["0.025"] == 2 and got["0.25"] == 3
    assert got["1.0"] == 4 and got["60.0"] == 4 and got["+Inf"] == 5


def test_served_metrics_read_current_values():
    runner, said = _runner(), []
    with serving(runner, None, say=said.append) as url:
        first = _scrape(url)
        runner.fronts.fronts["api"].stats.requests += 5
        second = _scrape(url)
    assert len(said) == 1 and url in said[0]
    sub = (("subscription", "orders-sub"),)
    assert first[("surgesim_subscription_backlog_messages", sub)] == 1
    assert first[("surgesim_subscription_dead_lettered_total", sub)] == 1
    assert first[("surgesim_subscription_acked_total", sub)] == 1
    assert 1.5 < first[("surgesim_subscription_oldest_unacked_age_seconds", sub)] < 30
    # a subscription nobody reports acks for has no backlog rather than a made-up one
    assert ("surgesim_subscription_backlog_messages", (("subscription", "audit-sub"),)) not in first
    assert first[("surgesim_topic_published_total", (("topic", "orders"),))] == 3
    svc = (("service", "api"),)
    assert first[("surgesim_front_requests_total", svc)] == 7 and second[("surgesim_front_requests_total", svc)] == 12
    assert first[("surgesim_front_rejected_total", svc)] == 2 and first[("surgesim_front_instances", svc)] == 3
    route = (("route", "/orders/{id}/pay"), ("service", "api"))
    assert first[("surgesim_front_request_duration_seconds_count", route)] == 4
    assert first[("surgesim_front_request_duration_seconds_bucket", (("le", "0.25"),) + route)] == 3
    assert abs(first[("surgesim_front_request_duration_seconds_sum", route)] - 0.923) < 1e-9
    assert first[("surgesim_run_elapsed_seconds", ())] == 12.5


def test_port_zero_serves_nothing():
    said = []
    with serving(_runner(), 0, say=said.append) as url:
        assert url is None
    assert said == []
