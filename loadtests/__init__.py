"""Live traffic for surgesim: the scenario's arrivals sent for real, in wall-clock time.

    run_locust(scenario, host_map, duration_s, out_dir, env) -> LocustResult   (runner.py)
    run_fleet(scenario, endpoints, duration_s, out_dir)       -> DriverResult  (fleet_driver.py)

Both use the simulator's traffic model (plan.py), stamp every send with its intended time
and measure latency from it (recorder.py). Locust lives in its own process (gevent);
nothing imported from this package's __init__ imports Locust. See docs/loadtests.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_fleet", "run_locust"]


def run_locust(*args: Any, **kwargs: Any):
    from surgesim.loadtests.runner import run_locust as run

    return run(*args, **kwargs)


def run_fleet(*args: Any, **kwargs: Any):
    from surgesim.loadtests.fleet_driver import run_fleet as run

    return run(*args, **kwargs)
