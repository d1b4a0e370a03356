import re

import pytest

from surgesim.pubsub_filter import FilterSyntaxError, matches, parse_filter

EVENT = {"eventType": "ParcelDelivered", "parcelId": "p-1", "ce-type": "x.y", "iana.org/lang": "en"}


@pytest.mark.parametrize(
    "expr, expected",
    [
        ('attributes.eventType = "ParcelDelivered"', True),
        ('attributes.eventType = "ParcelCreated"', False),
        ('attributes.eventType != "ParcelCreated"', True),
        ('attributes.missing != "x"', True),  # as in Pub/Sub: != matches absent keys
        ("attributes:parcelId", True),
        ("attributes:missing", False),
        ("NOT attributes:missing", True),
        ("-attributes:parcelId", False),
        ('hasPrefix(attributes.eventType, "Parcel")', True),
        ('hasPrefix(attributes.eventType, "Route")', False),
        ('hasPrefix(attributes.missing, "")', False),
        ('attributes.ce-type = "x.y"', True),
        ('attributes."iana.org/lang" = "en"', True),
        ('attributes:"iana.org/lang"', True),
        ('attributes.eventType = "A" OR attributes.eventType = "ParcelDelivered"', True),
        ('attributes.eventType = "ParcelDelivered" AND attributes.parcelId = "p-2"', False),
        ('(attributes.eventType = "A" OR attributes:parcelId) AND NOT attributes:missing', True),
        ('hasPrefix(attributes.eventType, "Parcel") AND NOT attributes.eventType = "ParcelCreated"', True),
        ("", True),
    ],
)
def test_filter_semantics(expr, expected):
    assert matches(expr, EVENT) is expected


@pytest.mark.parametrize(
    "expr, message",
    [
        ('attributes.a = "x" AND attributes.b = "y" OR attributes.c = "z"', "parentheses"),
        ('attributes.a = x', "expected string"),
        ('attributes.a == "x"', "expected string, got '='"),
        ('attributes.a = "x" attributes.b = "y"', "after a complete expression"),
        ('hasPrefix(attributes.a "x")', "expected ','"),
        ('data.a = "x"', "expected attributes.KEY"),
        ('(attributes:a', "expected ')'"),
        ('attributes.a = "x', "unexpected character"),
    ],
)
def test_filter_syntax_errors_name_the_problem(expr, message):
    with pytest.raises(FilterSyntaxError, match=re.escape(message)):
        parse_filter(expr)


def test_meridian_filters_route_events_to_the_right_reactors():
    from surgesim.schema import load_system

    system = load_system("scenarios/systems/meridian.yaml")
    subs = {s.name: s.filter for s in system.subscriptions_of("logistics.events")}

    def receivers(event_type):
        return {n for n, f in subs.items() if matches(f, {"eventType": event_type})}

    assert receivers("ParcelDelivered") == {"notification-sub", "billing-sub", "driver-scoring-sub", "pod-sub", "client-webhook-sub"}
    assert receivers("ParcelCreated") == set()
    assert receivers("RouteEtaUpdated") == set()  # eta must never consume its own output
    assert receivers("GeofenceCrossed") == {"eta-sub", "driver-scoring-sub"}
