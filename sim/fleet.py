"""A seeded delivery fleet moving through a metro region, for realistic telemetry payloads.

Each vehicle drives a closed loop from its depot through `stops` delivery stops and back,
along street-like legs (an east-west then a north-south run, as on a grid plan), at an
urban speed that varies per vehicle, and dwells at each stop. Everything is arrays over
vehicles, so stepping 8,200 vehicles costs a few NumPy operations.

Positions are kept in metres east/north of the region's centre and converted to
latitude/longitude on output (an equirectangular projection: fine within a city).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Iterable

import numpy as np

EARTH_M_PER_DEG = 111_320.0


class Fleet:
    def __init__(self, vehicles: int, seed: int = 0, *, centre: tuple[float, float] = (51.5072, -0.1276),
                 radius_km: float = 20.0, depots: int = 6, stops: int = 8, fences: int = 100,
                 fence_radius_m: float = 400.0):
        if vehicles < 1:
            raise ValueError(f"vehicles must be >= 1, got {vehicles}")
        self.n = int(vehicles)
        self.centre = centre
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        r = radius_km * 1000.0
        # Depots on a ring around the centre; vehicles spread over them.
        ang = np.linspace(0, 2 * np.pi, depots, endpoint=False) + rng.random() * 2 * np.pi
        depot_xy = np.stack([np.cos(ang), np.sin(ang)], axis=1) * (0.6 * r)
        self.depot = rng.integers(0, depots, self.n)
        # Delivery stops: uniform over the disc, closer to the depot than to the far side.
        rr = r * np.sqrt(rng.random((self.n, stops)))
        th = rng.random((self.n, stops)) * 2 * np.pi
        stop_xy = np.stack([rr * np.cos(th), rr * np.sin(th)], axis=2)
        stop_xy = 0.5 * stop_xy + 0.5 * depot_xy[self.depot][:, None, :]
        # Loop: depot, then stop_1..stop_k, then depot; each leg has a corner (grid streets).
        nodes = np.concatenate([depot_xy[self.depot][:, None, :], stop_xy, depot_xy[self.depot][:, None, :]], axis=1)
        a, b = nodes[:, :-1, :], nodes[:, 1:, :]
        corner = np.stack([b[..., 0], a[..., 1]], axis=2)
        way = np.empty((self.n, 2 * (stops + 1) + 1, 2))
        way[:, 0:-1:2] = a
        way[:, 1::2] = corner
        way[:, -1] = nodes[:, -1]
        self.way = way
        seg = np.linalg.norm(np.diff(way, axis=1), axis=2)
        self.cum = np.concatenate([np.zeros((self.n, 1)), np.cumsum(seg, axis=1)], axis=1)
        self.length = self.cum[:, -1]
        # Stops sit at the even waypoints 2..2k (index 0 and the last are the depot).
        self.stop_at = self.cum[:, 2:-1:2]
        self.next_stop = np.zeros(self.n, dtype=np.int64)
        self.s = rng.random(self.n) * self.length  # vehicles start spread along their loops
        self.next_stop = (self.stop_at <= self.s[:, None]).sum(axis=1)
        self.cruise = rng.uniform(6.0, 13.0, self.n)  # 22-47 km/h between stops
        self.speed = self.cruise.copy()
        self.dwell = np.zeros(self.n)
        self.time = 0.0
        # Geofences: circles around depots and busy customer sites.
        extra = max(0, fences - depots)
        fr = r * np.sqrt(rng.random(extra))
        ft = rng.random(extra) * 2 * np.pi
        self.fence_xy = np.concatenate([depot_xy, np.stack([fr * np.cos(ft), fr * np.sin(ft)], axis=1)])
        self.fence_radius = fence_radius_m
        self._inside = self._inside_now()
        self.last_crossings: tuple[np.ndarray, np.ndarray, np.ndarray] = (
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))

    # ---- motion -------------------------------------------------------------------------

    def step(self, dt_s: float) -> None:
        """Advance every vehicle by dt_s seconds."""
        dt_s = float(dt_s)
        self.time += dt_s
        rng = self.rng
        waiting = self.dwell > 0
        self.dwell = np.maximum(self.dwell - dt_s, 0.0)
        # Traffic: speed wanders around the vehicle's cruise speed (lights, congestion).
        self.speed = np.clip(self.speed + rng.normal(0, 1.5, self.n) * math.sqrt(min(dt_s, 60.0)),
                             0.3 * self.cruise, 1.3 * self.cruise)
        moving = ~waiting
        s_new = self.s + np.where(moving, self.speed * dt_s, 0.0)
        k = self.stop_at.shape[1]
        has_stop = self.next_stop < k
        stop_pos = np.where(has_stop, self.stop_at[np.arange(self.n), np.minimum(self.next_stop, k - 1)], np.inf)
        arrive = moving & (s_new >= stop_pos)
        s_new = np.where(arrive, stop_pos, s_new)
        self.dwell = np.where(arrive, rng.uniform(45.0, 240.0, self.n), self.dwell)
        self.next_stop = self.next_stop + arrive
        lap = s_new >= self.length
        s_new = np.where(lap, s_new - self.length, s_new)
        self.next_stop = np.where(lap, 0, self.next_stop)
        self.s = s_new
        inside = self._inside_now()
        changed = inside != self._inside
        v, f = np.nonzero(changed)
        self.last_crossings = (v.astype(np.int64), f.astype(np.int64), inside[v, f])
        self._inside = inside

    def _segment(self) -> np.ndarray:
        seg = (self.cum[:, 1:] <= self.s[:, None]).sum(axis=1)
        return np.minimum(seg, self.cum.shape[1] - 2)

    def xy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Metres east, metres north of the centre, and heading in degrees (0 = north)."""
        i = np.arange(self.n)
        seg = self._segment()
        a, b = self.way[i, seg], self.way[i, seg + 1]
        seglen = np.maximum(self.cum[i, seg + 1] - self.cum[i, seg], 1e-9)
        f = np.clip((self.s - self.cum[i, seg]) / seglen, 0.0, 1.0)[:, None]
        p = a + (b - a) * f
        d = b - a
        heading = np.degrees(np.arctan2(d[:, 0], d[:, 1])) % 360.0
        return p[:, 0], p[:, 1], heading

    def _inside_now(self) -> np.ndarray:
        x, y, _ = self.xy()
        d2 = (x[:, None] - self.fence_xy[None, :, 0]) ** 2 + (y[:, None] - self.fence_xy[None, :, 1]) ** 2
        return d2 <= self.fence_radius**2

    def positions(self) -> dict[str, np.ndarray]:
        """Vectorised state: lat, lng, speed (km/h, 0 while dwelling), heading (degrees)."""
        x, y, heading = self.xy()
        lat = self.centre[0] + y / EARTH_M_PER_DEG
        lng = self.centre[1] + x / (EARTH_M_PER_DEG * math.cos(math.radians(self.centre[0])))
        speed = np.where(self.dwell > 0, 0.0, self.speed * 3.6)
        return {"lat": lat, "lng": lng, "speed": speed, "heading": heading}

    def geofence_crossings(self) -> list[dict]:
        """Entries and exits during the last step: [{vehicleId, fence, event}]."""
        v, f, entered = self.last_crossings
        return [{"vehicleId": vehicle_id(int(a)), "fence": f"fence-{int(b):03d}",
                 "event": "enter" if e else "exit"} for a, b, e in zip(v, f, entered)]

    # ---- payloads -----------------------------------------------------------------------

    def pings(self, ids: Iterable[int] | np.ndarray, t: float | dt.datetime) -> list[dict[str, Any]]:
        """Telemetry payloads for the given vehicle indices at time t (epoch seconds or a
        datetime): {vehicleId, lat, lng, speed (km/h), heading (degrees), ts (ISO 8601 UTC)}."""
        idx = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        pos = self.positions()
        if isinstance(t, dt.datetime):
            when = t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
        else:
            when = dt.datetime.fromtimestamp(float(t), tz=dt.timezone.utc)
        ts = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        lat, lng, sp, hd = (np.round(pos[k][idx], n) for k, n in
                            (("lat", 6), ("lng", 6), ("speed", 1), ("heading", 0)))
        return [{"vehicleId": vehicle_id(int(i)), "lat": float(a), "lng": float(b), "speed": float(c),
                 "heading": int(d) % 360, "ts": ts} for i, a, b, c, d in zip(idx, lat, lng, sp, hd)]


def vehicle_id(index: int) -> str:
    return f"V{index:05d}"
