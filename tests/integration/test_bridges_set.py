"""All bridges for a system file, started and stopped together."""

from __future__ import annotations

import pytest

from surgesim.emulators.bridges import Bridges
from surgesim.emulators.pubsub_rest import b64
from surgesim.rundir import METRICS
from surgesim.schema import System
from tests.integration.bridges_support import Recorder, fresh, wait_until

pytestmark = pytest.mark.integration


def test_bridges_for_a_system_deliver_filter_and_measure(gcp):
    events, dlq = fresh("events"), fresh("events-dlq")
    sub, hold = fresh("eta-sub"), fresh("eta-hold")
    system = System.model_validate({
        "name": "mini", "project": gcp.project,
        "topics": [{"name": events}, {"name": dlq}],
        "subscriptions": [
            {"name": sub, "topic": events, "consumer": "eta", "delivery": "push", "push_path": "/pubsub",
             "filter": 'attributes.eventType = "ParcelAssigned"', "dead_letter": {"topic": dlq, "max_attempts": 5}},
            {"name": hold, "topic": dlq},
        ],
        "services": [{"name": "eta", "steps": [{"cpu": {"p50": "1ms"}}]}],
    })
    server = Recorder()
    bridges = Bridges(system, None, pubsub_endpoint=gcp.endpoint("pubsub"), service_urls={"eta": server.url},
                      push_token="tok", fidelity=gcp.fidelity, metrics_interval=0.2)
    bridges.start()
    try:
        import httpx

        httpx.post(f"http://{gcp.endpoint('pubsub')}/v1/projects/{gcp.project}/topics/{events}:publish",
                   json={"messages": [{"data": b64("a"), "attributes": {"eventType": "ParcelAssigned"}},
                                      {"data": b64("b"), "attributes": {"eventType": "ParcelCreated"}}]},
                   trust_env=False).raise_for_status()
        assert wait_until(lambda: bridges.metrics.totals()[sub]["acked"] == 1, timeout=20)
        assert wait_until(lambda: bridges.metrics.totals()[sub]["filtered"] == 1, timeout=20)
    finally:
        bridges.stop()
        server.close()
    assert len(server.requests) == 1
    path, headers, body = server.requests[0]
    assert path == "/pubsub" and headers["authorization"] == "Bearer tok"
    assert body["message"]["attributes"] == {"eventType": "ParcelAssigned"}
    frame = bridges.metrics.frame()
    backlog = frame[(frame.metric == METRICS["backlog"]) & (frame.entity == sub)]
    assert len(backlog) >= 1 and backlog.value.iloc[-1] == 0
