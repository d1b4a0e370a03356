"""How long a scenario's `prepare:` phase takes to put its Firestore documents in place
(loadtests/prepare.py: batched commits of 500 writes through the emulator's REST API), for
dispatch_wave's parcel stock by default (docs/live.md, "The prepare phase").

Only the Firestore emulator runs (its own state dir, free port).

    .venv/bin/python bench/bench_live_prepare.py [--rate-scale 0.1] [--scenario S.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from surgesim.emulators import down, up
from surgesim.loadtests.plan import LivePlan
from surgesim.loadtests.prepare import Preparer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default=None, help="default: dispatch_wave.yaml")
    ap.add_argument("--rate-scale", type=float, default=0.1)
    a = ap.parse_args()
    plan = LivePlan(a.scenario, rate_scale=a.rate_scale)
    state = tempfile.mkdtemp(prefix="bench-prepare-")
    stack = up(["firestore"], project=plan.exp.system.project, state_dir=state)
    out: dict = {"load_before": os.getloadavg()[0]}
    try:
        prep = Preparer(plan, f"{state}/prepare.json", say=lambda line: None)
        prep.before_bridges(stack.clients)
        out["entries"] = prep.entries
        out["documents"] = sum(e["ok"] for e in prep.entries.values())
        out["seconds"] = round(prep.seconds, 3)
    finally:
        down(state_dir=state)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
