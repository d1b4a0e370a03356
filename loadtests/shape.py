"""The load shape's arithmetic, free of Locust (importing Locust monkey-patches the process
with gevent, so tests and the live harness use this instead; locust_users.ScenarioShape
delegates here).

target_rate(t) is the wall-clock send rate at wall time t: the simulator's rate_series at
scenario time t x time_scale, times rate_scale. users_needed(t) is the pool that carries it
without being the bottleneck: rate x window concurrent sends per HTTP group (Little's law
with `window` the expected seconds per send), a few batching publishers for the publish group.
"""

from __future__ import annotations

import math

from surgesim.loadtests.plan import PUBLISH_GROUP, LivePlan


class RateShape:
    def __init__(self, plan: LivePlan, *, window_s: float = 0.25, max_users: int = 200, lookahead_s: float = 2.0):
        self.plan = plan
        self.window_s = window_s
        self.max_users = max_users
        self.lookahead_s = lookahead_s
        self._groups = plan.groups()

    def target_rate(self, wall_t: float, group: str | None = None) -> float:
        sources = self.plan.sources if group is None else self._groups.get(group, [])
        return self.plan.total_rate(wall_t, sources)

    def users_needed(self, wall_t: float) -> dict[str, int]:
        out = {}
        for group in self._groups:
            rate = max(self.target_rate(wall_t, group), self.target_rate(wall_t + self.lookahead_s, group))
            if group == PUBLISH_GROUP:
                out[group] = min(8, 1 + int(rate // 2000))  # each publishes up to 1,000 messages per request
            else:
                out[group] = min(self.max_users, 2 + int(math.ceil(rate * self.window_s)))
        return out

    def rate_table(self, step_s: float = 1.0) -> list[tuple[float, float]]:
        """(wall t, total rate) over the run: what the shape follows, for docs and plots."""
        n = max(1, int(math.ceil(self.plan.duration_s / step_s)))
        return [(i * step_s, self.target_rate(i * step_s)) for i in range(n + 1)]
