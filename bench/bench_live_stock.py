"""How long a live run's parcel stock takes to put in place, two ways (docs/live.md):

* `firestore_batch`: surgesim/live/stock.py's bulk writes into the Firestore emulator;
* `commands`: the same parcels brought to their states through the real command service
  (the fleet driver's preload: create, assign, out for delivery per parcel, 64 at a time).

Only the Firestore emulator and the command service run (its own state dir, free ports), so
the command path here is a lower bound: in a live run each command's event also goes
through the trigger, the publisher and three reactors.

    .venv/bin/python bench/bench_live_stock.py [--rate-scale 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

from surgesim.emulators import down, up
from surgesim.live.stock import write_stock
from surgesim.loadtests.actions import run_tag, stock_counts
from surgesim.loadtests.fleet_driver import FleetDriver
from surgesim.loadtests.plan import LivePlan
from surgesim.services.common.devserver import run_service


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default=None, help="default: dispatch_wave.yaml")
    ap.add_argument("--rate-scale", type=float, default=0.1)
    a = ap.parse_args()
    plan = LivePlan(a.scenario, rate_scale=a.rate_scale)
    counts = stock_counts(plan)
    state = tempfile.mkdtemp(prefix="bench-stock-")
    stack = up(["firestore"], project=plan.exp.system.project, state_dir=state)
    out = {"counts": counts, "load_before": os.getloadavg()[0]}
    try:
        out["firestore_batch"] = write_stock(stack.clients.firestore(), plan, f"{state}/stock.json", run_tag())
        with run_service("surgesim.services.meridian.command:app", stack.env_vars()) as svc:
            driver = FleetDriver(plan, {"command": svc.url, "pubsub": "unused:1", "project": plan.exp.system.project})
            started = time.perf_counter()
            asyncio.run(_preload(driver, plan.duration_s))
            out["commands"] = {**driver.stock, "commands": sum(n * (1 + i) for i, n in enumerate(counts.values())),
                               "wall_s": round(time.perf_counter() - started, 3)}
    finally:
        down(state_dir=state)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


async def _preload(driver: FleetDriver, duration_s: float) -> None:
    import httpx

    async with httpx.AsyncClient(trust_env=False, timeout=30.0,
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)) as client:
        driver._client = client  # noqa: SLF001 -- the driver's own preload, without its schedule
        await driver._preload(duration_s)  # noqa: SLF001


if __name__ == "__main__":
    main()
