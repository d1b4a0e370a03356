"""The fidelity probe against the real Pub/Sub emulator, checked by an independent pull."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from google.api_core.exceptions import DeadlineExceeded

from surgesim.emulators import load_fidelity, probe_pubsub

pytestmark = pytest.mark.integration


def _observe_filter(gcp) -> bool:
    """Does a filtered subscription hold back a non-matching message? (official gRPC client)"""
    pub, sub = gcp.clients.publisher(), gcp.clients.subscriber()
    tag = uuid.uuid4().hex[:8]
    topic = pub.topic_path(gcp.project, f"obs-filter-{tag}")
    subscription = sub.subscription_path(gcp.project, f"obs-filter-{tag}")
    pub.create_topic(name=topic)
    sub.create_subscription(request={"name": subscription, "topic": topic, "filter": 'attributes.colour = "red"'})
    pub.publish(topic, b"red", colour="red").result(timeout=10)
    pub.publish(topic, b"blue", colour="blue").result(timeout=10)
    seen: set[str] = set()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and "blue" not in seen:
        try:  # the emulator long-polls: returns as soon as something is there
            resp = sub.pull(subscription=subscription, max_messages=10, timeout=1.5)
        except DeadlineExceeded:
            continue
        for m in resp.received_messages:
            seen.add(m.message.attributes["colour"])
        if resp.received_messages:
            sub.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in resp.received_messages])
    sub.close()
    assert "red" in seen, "the matching message never arrived"
    return "blue" not in seen


def test_probe_filter_result_matches_an_actual_pull(gcp):
    report = probe_pubsub(gcp.endpoint("pubsub"), gcp.project, state_dir=gcp.state_dir)
    assert isinstance(report.filter_applied, bool), report.errors
    assert report.filter_applied == _observe_filter(gcp)
    assert report.duration_s < 10


def test_probe_measures_every_feature_and_is_saved(gcp):
    # `up(probe=True)` in the session fixture ran it once already
    assert gcp.fidelity is not None and gcp.fidelity.errors == {}
    report = load_fidelity(gcp.state_dir)
    saved = json.loads((gcp.state_dir / "fidelity.json").read_text())
    assert saved["emulator_version"] and saved["gcloud_version"]
    for field in ("filter_applied", "dead_letter_applied", "delivery_attempt_counted", "ordering_preserved",
                  "exactly_once_accepted", "push_delivery", "bigquery_subscription_accepted"):
        assert isinstance(getattr(report, field), bool), field
    # measured facts about the emulator this project pins (DESIGN.md: 0.8.20)
    if report.emulator_version == "0.8.20":
        assert report.dead_letter_applied and report.dead_letter_after_attempts == 5
        assert report.push_delivery
