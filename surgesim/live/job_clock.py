"""The BigQuery job clock of a live run (emulators/bq_jobs.py): started when a service of
the system has a `bigquery: {op: job, duration: ...}` step and the run has a BigQuery
emulator. Every service that runs live then reaches BigQuery through a clock of its own
(BIGQUERY_EMULATOR_HOST points there), so the job run time of the step is the inserting
service's, and one job table is shared, so another service's jobs.get sees the same job
running."""

from __future__ import annotations

from surgesim.emulators.bq_jobs import JobClock, JobTable


def job_durations(system) -> dict[str, tuple[float, float | None]]:
    """service -> (p50, p99) scenario seconds of its BigQuery job step (the first, if several)."""
    out: dict[str, tuple[float, float | None]] = {}
    for s in system.services:
        for step in s.steps:
            bq = step.bigquery
            if bq is not None and bq.op == "job" and bq.duration is not None and s.name not in out:
                out[s.name] = (float(bq.duration.p50), None if bq.duration.p99 is None else float(bq.duration.p99))
    return out


def start(system, services: list[str], fronts, emulator_env: dict[str, str], *, time_scale: float,
          seed: int) -> tuple[dict[str, str], JobTable | None]:
    """({service: BIGQUERY_EMULATOR_HOST for it}, the shared job table); ({}, None) when the
    system has no job step with a duration or the run has no BigQuery emulator."""
    durations = job_durations(system)
    host = emulator_env.get("BIGQUERY_EMULATOR_HOST")
    if not durations or not host:
        return {}, None
    table = JobTable()
    hosts = {}
    for i, name in enumerate(services):
        p50, p99 = durations.get(name, (None, None))
        clock = JobClock(f"http://{host}", table, p50=p50, p99=p99, time_scale=time_scale, seed=seed + i,
                         service=name)
        hosts[name] = f"127.0.0.1:{fronts.serve_app(f' bq-jobs {name}', clock)}"
    return hosts, table
