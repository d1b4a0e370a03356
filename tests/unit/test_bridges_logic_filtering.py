"""Filter decisions for the bridges (the syntax itself is tested in test_pubsub_filter)."""

from __future__ import annotations

from types import SimpleNamespace

from surgesim.emulators.filtering import emulator_applies_filters, internal_topic, should_deliver

ETA = 'attributes.eventType = "ParcelAssigned" OR attributes.eventType = "GeofenceCrossed"'
WEBHOOK = 'hasPrefix(attributes.eventType, "Parcel") AND NOT attributes.eventType = "ParcelCreated"'


def test_enforce_unless_probe_measured_filters_applied():
    assert emulator_applies_filters(None) is False
    assert emulator_applies_filters(SimpleNamespace(filter_applied=None)) is False
    assert emulator_applies_filters(SimpleNamespace(filter_applied=False)) is False
    assert emulator_applies_filters(SimpleNamespace(filter_applied=True)) is True


def test_should_deliver_meridian_filters():
    assert should_deliver(ETA, {"eventType": "GeofenceCrossed"})
    assert not should_deliver(ETA, {"eventType": "ParcelDelivered"})
    assert not should_deliver(ETA, {})
    assert should_deliver(WEBHOOK, {"eventType": "ParcelDelivered"})
    assert not should_deliver(WEBHOOK, {"eventType": "ParcelCreated"})
    assert not should_deliver(WEBHOOK, {"eventType": "GeofenceCrossed"})
    assert should_deliver(None, {}) and should_deliver("", {"a": "b"})


def test_internal_topic_name_is_a_valid_pubsub_name():
    from surgesim.schema.common import _pubsub_name

    assert _pubsub_name(internal_topic("telemetry-livemap")) == "surgesim.filtered.telemetry-livemap"
