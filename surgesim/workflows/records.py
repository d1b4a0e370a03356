"""What a run's workflow executions add up to: the summary of one workflow's execution
records (the JSON lines the executor writes, docs/workflows.md), for summary.json's
`totals.workflows`, the report and the implicit `workflows` check.

Per workflow: `executions`, counts by `state` (SUCCEEDED / FAILED, as Google's executions
API names them), `failed` (the number the check judges), `outcomes` (a map result's
`state` field, the usual way a saga says succeeded vs compensated: a compensated execution
ends SUCCEEDED, and only its result tells), `retries` (retry entries over all steps),
`duration_s` {p50, p99, max} over the executions, and the records file.

Pure: reads a file, no clock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def read_records(path: str | Path) -> list[dict]:
    """The execution records of a JSON-lines file (none when it does not exist: a workflow
    that never started). A line cut short by a process killed mid-write is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _outcome(rec: dict) -> str | None:
    result = rec.get("result")
    if isinstance(result, dict) and isinstance(result.get("state"), str):
        return result["state"]
    return None


def summarise(records: Iterable[dict], path: str | Path | None = None) -> dict[str, Any]:
    recs = list(records)
    states: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for r in recs:
        state = str(r.get("state") or "UNKNOWN")
        states[state] = states.get(state, 0) + 1
        outcome = _outcome(r)
        if outcome is not None:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    durations = np.array([float(r["duration_s"]) for r in recs if isinstance(r.get("duration_s"), (int, float))])
    duration = ({"p50": round(float(np.percentile(durations, 50)), 3),
                 "p99": round(float(np.percentile(durations, 99)), 3),
                 "max": round(float(durations.max()), 3)} if durations.size else None)
    retries = sum(1 for r in recs for s in r.get("steps") or []
                  if isinstance(s, dict) and str(s.get("step", "")).endswith(".retry"))
    failed = [r for r in recs if r.get("state") == "FAILED"]
    out: dict[str, Any] = {"executions": len(recs), "states": dict(sorted(states.items())),
                           "succeeded": states.get("SUCCEEDED", 0), "failed": len(failed),
                           "outcomes": dict(sorted(outcomes.items())), "retries": retries, "duration_s": duration}
    if failed:  # the first few, so the check and the report can say why without opening the file
        out["failed_examples"] = [{"execution_id": r.get("execution_id"), "error": _short(r.get("error"))}
                                  for r in failed[:3]]
    if path is not None:
        out["records"] = str(path)
    return out


def _short(error: Any, limit: int = 300) -> Any:
    text = error if isinstance(error, str) else json.dumps(error, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def workflow_totals(paths: dict[str, str | Path]) -> dict[str, dict]:
    """summary.json `totals.workflows` of a live run: workflow name -> summarise(its file)."""
    return {name: summarise(read_records(p), p) for name, p in sorted(paths.items())}
