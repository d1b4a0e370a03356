"""A run's job and workflow executions for the report: the job execution records the live
harness writes (<run>/jobs/<execution>.json, surgesim/live/jobs.py) and the workflow
totals in summary.json (surgesim/workflows/records.py)."""

from __future__ import annotations

import json
from pathlib import Path


def job_executions(run_dir: str | Path) -> list[dict]:
    """Every job execution record of the run, oldest first (none for a sim run)."""
    out = []
    for p in sorted((Path(run_dir) / "jobs").glob("*.json")):
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if isinstance(rec, dict) and "tasks" in rec:
            out.append(rec)
    return sorted(out, key=lambda r: r.get("start") or 0.0)


def job_rows(executions: list[dict]) -> list[dict]:
    rows = []
    for ex in executions:
        attempts = [a for t in ex.get("tasks") or [] for a in t.get("attempts") or []]
        rows.append({"job": ex.get("job"), "execution": ex.get("execution"), "state": ex.get("state"),
                     "tasks": ex.get("task_count"), "succeeded": ex.get("succeeded"), "failed": ex.get("failed"),
                     "attempts": len(attempts), "retries": ex.get("retries"),
                     "crashed": sum(1 for a in attempts if a.get("exit_code") not in (0, None) and not a.get("timed_out")),
                     "timeouts": sum(1 for a in attempts if a.get("timed_out")),
                     "duration_s": ex.get("duration_s")})
    return rows


def workflow_rows(summary: dict) -> list[dict]:
    """One row per workflow of summary.totals.workflows (live: execution records; sim:
    started / succeeded / compensated / failed)."""
    rows = []
    for name, t in sorted(((summary.get("totals") or {}).get("workflows") or {}).items()):
        t = t or {}
        outcomes = dict(t.get("outcomes") or {})
        if "compensated" in t and "executions" not in t:  # the simulator's saga counts
            outcomes = {k: t[k] for k in ("succeeded", "compensated") if t.get(k)}
        d = t.get("duration_s") or {}
        rows.append({"name": name, "executions": t.get("executions", t.get("started")),
                     "succeeded": t.get("succeeded"), "failed": t.get("failed"),
                     "outcomes": ", ".join(f"{k} {v:,}" for k, v in outcomes.items()),
                     "retries": t.get("retries"), "p50": d.get("p50"), "p99": d.get("p99"), "max": d.get("max")})
    return rows
