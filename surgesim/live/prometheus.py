"""A live run's numbers as Prometheus/OpenMetrics on ``/metrics`` while it runs (docs/live.md).

The collector keeps no numbers of its own: every scrape reads the current values from
what the run already measures -- the bridges' MetricsSampler ledgers (published, acked,
dead-lettered, backlog, oldest unacked age per subscription) and the Cloud Run fronts
(requests, 429s, 5xx, cold starts, instances, latency per route).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator

import numpy as np

from surgesim.histogram import Histogram, bucket_of

log = logging.getLogger(__name__)

# Prometheus histograms need fixed bucket bounds; the fronts' log-linear histograms are
# re-binned onto these (seconds). A bound falls inside one of ours, so a count is placed
# at our bucket's upper edge: an error of at most 1/64 of the bound (surgesim.histogram).
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# A path segment that carries an id (a digit, or a long token) becomes {id}: one label
# value per route, not per entity (Prometheus keeps one series per label value).
_ID_SEGMENT = re.compile(r"^(?=.*\d)[^/]+$|^[A-Za-z0-9_-]{20,}$")


def route_of(path: str) -> str:
    return "/".join("{id}" if _ID_SEGMENT.match(seg) else seg for seg in path.split("/"))


def cumulative_buckets(h: Histogram, bounds=LATENCY_BOUNDS) -> list[tuple[str, float]]:
    """(le, cumulative count) for a Prometheus histogram, +Inf last."""
    counts = np.cumsum(h.counts)
    # the last of our buckets whose lower edge is below the bound: everything up to it is <= le
    idx = [int(bucket_of(np.array([b]))[0]) for b in bounds]
    out = [(repr(float(b)), float(counts[i])) for b, i in zip(bounds, idx)]
    return out + [("+Inf", float(h.count))]


class LiveCollector:
    """A prometheus_client custom collector over a running SystemRunner."""

    def __init__(self, runner) -> None:
        self.runner = runner

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        r = self.runner
        yield GaugeMetricFamily("surgesim_run_elapsed_seconds", "Wall seconds since the run's traffic started.",
                                value=r.elapsed())
        sampler = r.bridges.metrics if r.bridges is not None else None
        if sampler is not None:
            now = time.time()
            published = CounterMetricFamily("surgesim_topic_published", "Messages published to the topic.",
                                            labels=["topic"])
            for topic, n in list(sampler.published.items()):
                published.add_metric([topic], n)
            yield published
            acked = CounterMetricFamily("surgesim_subscription_acked", "Messages acknowledged.", labels=["subscription"])
            dead = CounterMetricFamily("surgesim_subscription_dead_lettered", "Messages forwarded to the dead-letter topic.",
                                       labels=["subscription"])
            filtered = CounterMetricFamily("surgesim_subscription_filtered", "Messages the subscription's filter excluded.",
                                           labels=["subscription"])
            backlog = GaugeMetricFamily("surgesim_subscription_backlog_messages",
                                        "Messages published and neither acked nor dead-lettered.", labels=["subscription"])
            oldest = GaugeMetricFamily("surgesim_subscription_oldest_unacked_age_seconds",
                                       "Age of the oldest message not yet acked.", labels=["subscription"])
            for name, ledger in list(sampler.ledgers.items()):
                dead.add_metric([name], ledger.dead_lettered)
                filtered.add_metric([name], ledger.filtered)
                if ledger.observed:  # no acknowledger reports here: no number rather than a made-up one
                    acked.add_metric([name], ledger.acked)
                    backlog.add_metric([name], ledger.backlog)
                    oldest.add_metric([name], _oldest_age(ledger, now))
            yield from (acked, dead, filtered, backlog, oldest)
        yield from self._fronts()

    def _fronts(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        counters = {key: CounterMetricFamily(f"surgesim_front_{key}", text, labels=["service"])
                    for key, text in (("requests", "Requests that reached the service's front."),
                                      ("rejected", "Requests answered 429 (no instance free)."),
                                      ("errors", "Requests answered 5xx."),
                                      ("unauthorized", "Requests refused for their token."),
                                      ("cold_starts", "Instances started."))}
        instances = GaugeMetricFamily("surgesim_front_instances", "Instances of the service now.", labels=["service"])
        latency = HistogramMetricFamily("surgesim_front_request_duration_seconds",
                                        "Request received by the front -> upstream answered, per route.",
                                        labels=["service", "route"])
        for name, f in list(self.runner.fronts.fronts.items()):
            s = f.stats
            for key, family in counters.items():
                family.add_metric([name], getattr(s, key))
            instances.add_metric([name], f.instance_count())
            per: dict[str, Histogram] = {}
            for path, h in list(s.latency.items()):
                per.setdefault(route_of(path), Histogram()).merge(h)
            for route, h in sorted(per.items()):
                latency.add_metric([name, route], cumulative_buckets(h), sum_value=h.total)
        yield from counters.values()
        yield from (instances, latency)


def _oldest_age(ledger, now: float) -> float:
    try:
        return ledger.oldest_age(now)
    except RuntimeError:  # the bridges' thread changed the outstanding set mid-read: next scrape
        return 0.0


@contextlib.contextmanager
def serving(runner, port: int | None, say=print, host: str = "127.0.0.1"):
    """Serve the runner's metrics on host:port/metrics while the block runs. port None:
    a free port; 0: not served. The URL is said once (a wildcard host: its 127.0.0.1 URL)."""
    if port == 0:
        yield None
        return
    from prometheus_client import CollectorRegistry, start_http_server

    from surgesim.ports import free_port

    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveCollector(runner))
    port = free_port() if port is None else port
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise RuntimeError(f"--metrics-port {port}: cannot listen on {host}:{port} ({exc})") from None
    from .fronts import reachable_host

    url = f"http://{reachable_host(host)}:{port}/metrics"
    say(f"metrics: {url} (Prometheus/OpenMetrics, while the run goes)")
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
