"""The fleet model behind live telemetry: seeded, moving at city speeds, stopping, crossing fences."""

from __future__ import annotations

import numpy as np

from surgesim.sim.fleet import Fleet, vehicle_id


def test_same_seed_same_fleet_and_pings():
    a, b = Fleet(200, seed=3), Fleet(200, seed=3)
    for _ in range(10):
        a.step(5.0)
        b.step(5.0)
    assert a.pings(range(200), 1.7e9) == b.pings(range(200), 1.7e9)
    c = Fleet(200, seed=4)
    c.step(5.0)
    assert c.pings([0], 1.7e9) != a.pings([0], 1.7e9)


def test_pings_carry_the_telemetry_fields():
    fleet = Fleet(50, seed=1)
    pings = fleet.pings(np.array([0, 7, 49]), 1_700_000_000.0)
    assert [p["vehicleId"] for p in pings] == ["V00000", "V00007", "V00049"]
    for p in pings:
        assert set(p) == {"vehicleId", "lat", "lng", "speed", "heading", "ts"}
        assert p["ts"] == "2023-11-14T22:13:20.000Z"
        assert 0 <= p["heading"] < 360 and 0 <= p["speed"] <= 70
        assert abs(p["lat"] - 51.5072) < 0.25 and abs(p["lng"] + 0.1276) < 0.4
    assert vehicle_id(8199) == "V08199"


def test_vehicles_move_at_city_speeds_and_dwell_at_stops():
    fleet = Fleet(500, seed=2)
    before = fleet.xy()
    fleet.step(10.0)
    after = fleet.xy()
    moved = np.hypot(after[0] - before[0], after[1] - before[1])
    # Along grid legs the straight-line distance is at most the distance driven.
    assert moved.max() <= 13.0 * 1.3 * 10.0 + 1e-6
    for _ in range(120):  # 20 minutes
        fleet.step(10.0)
    pos = fleet.positions()
    stopped = (pos["speed"] == 0).mean()
    assert 0.05 < stopped < 0.8  # some vehicles are at a stop, most are driving
    assert 15 < pos["speed"][pos["speed"] > 0].mean() < 55  # km/h


def test_geofence_crossings_are_reported_as_entries_and_exits():
    fleet = Fleet(1000, seed=5)
    events = []
    for _ in range(60):
        fleet.step(5.0)
        events += fleet.geofence_crossings()
    assert events, "a thousand vehicles for five minutes cross some fence"
    assert {e["event"] for e in events} == {"enter", "exit"}
    # Roughly one ping in a few hundred crosses a fence (Meridian's geofence fraction is 1/200).
    rate = len(events) / (1000 * 60)
    assert 1 / 2000 < rate < 1 / 50
