"""The report's Cloud Run Jobs table: per job, its outcome (summary totals.jobs), its
duration on the scenario clock (jobs.json) and the tasks' own counters, plus the external
APIs' call and 429 counts (what a rate-limited job runs into)."""

from __future__ import annotations

from surgesim.rundir import Run


def job_rows(run: Run) -> list[dict]:
    totals = run.summary.get("totals") or {}
    jobs, records = totals.get("jobs") or {}, run.jobs
    rows = []
    for name in sorted(set(jobs) | set(records)):
        t, r = jobs.get(name, {}), records.get(name, {})
        counters = t.get("counters") or {}
        rates = t.get("counters_per_s") or {}
        rows.append({"name": name, "state": r.get("state") or t.get("state"), "duration_s": r.get("duration_s"),
                     "tasks_succeeded": t.get("tasks_succeeded"), # tasks that used every retry (the simulator's
                     # totals count failed attempts as tasks_failed)
                     "tasks_failed": r.get("tasks_gave_up", t.get("tasks_failed")),
                     "retries": t.get("retries"), "timeouts": t.get("timeouts"),
                     "counters": [(k, v, rates.get(k)) for k, v in sorted(counters.items())]})
    return rows


def api_rows(summary: dict) -> list[dict]:
    apis = (summary.get("totals") or {}).get("apis") or {}
    return [{"name": k, "calls": v.get("calls"), "rate_limited": v.get("rate_limited"), "errors": v.get("errors")}
            for k, v in sorted(apis.items())]
