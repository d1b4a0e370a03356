"""A live test's own copy of Meridian under a project id nobody else uses.

The session's emulators are shared by every test on an xdist worker, and Meridian's
project (`meridian-local`) with them. A CI run twice found telemetry-livemap short of a
few messages, the emulator empty: "2 went to a consumer outside this run pulling
telemetry-livemap on the same emulator" (conservation's diagnosis), a consumer some earlier
test on that worker left behind. A test whose assertions count every message runs its
scenario against this copy, so only its own run can consume it."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ROOT / "scenarios" / "systems"


def isolated(scenario: Path, where: Path) -> Path:
    """`scenario` (whose system is meridian.yaml) rewritten into `where`, its system a copy
    of Meridian with a project of its own; returns the new scenario file."""
    where.mkdir(parents=True, exist_ok=True)
    project = f"meridian-{uuid.uuid4().hex[:8]}"
    system = (SYSTEMS / "meridian.yaml").read_text()
    assert "project: meridian-local" in system
    (where / "meridian.yaml").write_text(system.replace("project: meridian-local", f"project: {project}", 1))
    (where / "meridian-dispatch.workflow.yaml").write_text((SYSTEMS / "meridian-dispatch.workflow.yaml").read_text())
    text = scenario.read_text()
    text = re.sub(r"(?m)^system: .*$", f"system: {where / 'meridian.yaml'}", text, count=1)
    text = re.sub(r"(?m)^plan: .*$", f"plan: {ROOT / 'scenarios' / 'plans' / 'baseline.yaml'}", text, count=1)
    out = where / scenario.name
    out.write_text(text)
    return out
