"""All bridges for a system file, started and stopped together."""

from __future__ import annotations

import pytest

from surgesim.emulators.bridges import Bridges
from surgesim.emulators.identity import Issuer
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
                      issuer=(issuer := Issuer()), fidelity=gcp.fidelity, metrics_interval=0.2)
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
    assert path == "/pubsub"
    claims = issuer.verify(headers["authorization"].removeprefix("Bearer "), [server.url])
    assert claims["email"] == f"{sub}-push@{gcp.project}.iam.gserviceaccount.com"  # the default push identity
    assert body["message"]["attributes"] == {"eventType": "ParcelAssigned"}
    frame = bridges.metrics.frame()
    backlog = frame[(frame.metric == METRICS["backlog"]) & (frame.entity == sub)]
    assert len(backlog) >= 1 and backlog.value.iloc[-1] == 0


def test_backlog_of_a_pull_subscription_consumed_by_a_service_process(gcp):
    """The service pulls straight from Pub/Sub; the counting proxy Bridges puts in its way
    gives the harness the acks, hence the backlog, without the service reporting anything."""
    from google.cloud import pubsub_v1

    from surgesim.emulators import Clients

    telemetry, sub = fresh("telemetry"), fresh("livemap")
    system = System.model_validate({
        "name": "mini", "project": gcp.project, "topics": [{"name": telemetry}],
        "subscriptions": [{"name": sub, "topic": telemetry, "consumer": "live-map"}],
        "services": [{"name": "live-map", "steps": [{"cpu": "1ms"}]}],
    })
    bridges = Bridges(system, None, pubsub_endpoint=gcp.endpoint("pubsub"), fidelity=gcp.fidelity,
                      metrics_interval=0.2).start()
    try:
        assert bridges.services_pubsub_host != gcp.endpoint("pubsub")  # services go through the proxy
        service_env = {**gcp.env_vars(), "PUBSUB_EMULATOR_HOST": bridges.services_pubsub_host}
        publisher = gcp.clients.publisher()
        topic = publisher.topic_path(gcp.project, telemetry)
        for i in range(20):
            publisher.publish(topic, b"ping", vehicleId=f"V{i}").result(timeout=10)
        assert wait_until(lambda: bridges.metrics.totals()[sub]["backlog"] == 20, timeout=20)

        def sampled(level: int) -> bool:  # the sampler wrote a row at that level (not only the ledger)
            rows = list(bridges.metrics.rows)
            return any(r["metric"] == METRICS["backlog"] and r["entity"] == sub and r["value"] == level for r in rows)

        assert wait_until(lambda: sampled(20), timeout=10)
        subscriber = Clients(service_env, project=gcp.project).subscriber()
        seen: list[str] = []

        def callback(message):
            if len(seen) < 15:
                seen.append(message.message_id)
                message.ack()

        future = subscriber.subscribe(subscriber.subscription_path(gcp.project, sub), callback,
                                      flow_control=pubsub_v1.types.FlowControl(max_messages=15))
        try:
            assert wait_until(lambda: bridges.metrics.totals()[sub]["acked"] == 15, timeout=30)
            assert wait_until(lambda: bridges.metrics.totals()[sub]["backlog"] == 5, timeout=10)
        finally:
            future.cancel()
            subscriber.close()
    finally:
        bridges.stop()
    frame = bridges.metrics.frame()
    backlog = frame[(frame.metric == METRICS["backlog"]) & (frame.entity == sub)].value
    assert backlog.max() == 20 and backlog.iloc[-1] == 5


@pytest.mark.parametrize("port", ["served", "taken"])
def test_a_trigger_is_fed_by_the_emulator_or_by_listeners_when_its_port_is_taken(gcp, port):
    """The stack started the Firestore emulator with a trigger events port: Bridges serve it
    and the emulator posts each write. If something else holds that port, Bridges warn and
    use collection listeners instead; either way each write is one CloudEvent."""
    import socket
    import uuid

    collection = f"parcels_{uuid.uuid4().hex[:8]}"
    system = System.model_validate({
        "name": "mini", "project": gcp.project, "topics": [], "subscriptions": [],
        "services": [{"name": "publisher", "steps": [{"cpu": {"p50": "1ms"}}]}],
        "triggers": [{"name": "outbox", "collection": collection, "target": "publisher"}],
    })
    events_port = gcp.ports("firestore")["firestore_events"]
    squatter = None
    if port == "taken":
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the served run's TIME_WAITs
        squatter.bind(("127.0.0.1", events_port))
        squatter.listen()
    server = Recorder()
    db = gcp.clients.firestore()
    bridges = Bridges(system, None, pubsub_endpoint=gcp.endpoint("pubsub"), service_urls={"publisher": server.url},
                      firestore=db, fidelity=gcp.fidelity, firestore_events_port=events_port)
    bridges.start()
    try:
        assert bridges.trigger_source == ("emulator" if port == "served" else "listen")
        assert (bridges.hook is not None) == (port == "served")
        col = db.collection(collection)
        if port == "served":  # the emulator posts every write, even four to one document in milliseconds
            col.document("p1").set({"status": "ParcelCreated"})
            for status in ("ParcelAssigned", "ParcelOutForDelivery", "ParcelDelivered"):
                col.document("p1").update({"status": status})
        else:  # listeners report states, which can merge writes that close together
            for i, status in enumerate(("ParcelCreated", "ParcelAssigned", "ParcelOutForDelivery", "ParcelDelivered")):
                col.document(f"p{i}").set({"status": status})
        assert wait_until(lambda: len(server.requests) >= 4, timeout=20)
        assert not wait_until(lambda: len(server.requests) > 4, timeout=1.0)
    finally:
        bridges.stop()
        server.close()
        if squatter is not None:
            squatter.close()
    from surgesim.services.common import cloudevents

    statuses = sorted(cloudevents.fields(cloudevents.document_event(raw, "application/protobuf").value)["status"]
                      for raw in server.raw)
    assert statuses == sorted(["ParcelCreated", "ParcelAssigned", "ParcelOutForDelivery", "ParcelDelivered"])
