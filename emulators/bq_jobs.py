"""A job clock in front of the BigQuery emulator: jobs that take time, as BigQuery's do.

bqemulator runs every job inside jobs.insert and answers it DONE (docs/emulators.md,
"BigQuery jobs"). In BigQuery a job runs for seconds to minutes and its caller polls
jobs.get until ``status.state`` is DONE; that loop is what a status checker is for, and on
the bare emulator it never turns. This reverse proxy gives each job inserted through it a
run time drawn from the system file's ``bigquery: {op: job, duration:}`` step of the
inserting service (log-normal through p50 and p99, as a front's cold starts; divided by
the run's time scale, since a job's run time is on the scenario's clock). The emulator
still runs the job at once: its result, rows and errors are the emulator's. Until the run
time has passed, the proxy answers for the job as BigQuery does for a running one:

* jobs.insert and jobs.get: ``status: {state: RUNNING}`` (no ``errorResult`` yet: a job
  that will fail is not known to have failed), no ``endTime`` in ``statistics``;
* getQueryResults: ``jobComplete: false`` with the job's reference, and no rows.

A bigquery_job_failure fault (surgesim/live/fault_kinds.py) sets ``JobTable.failing`` for
its window: a job inserted then (through the target service's proxy, or any) fails with the
fault's probability. It runs its drawn run time as any job, then answers as BigQuery does for
a job that failed: jobs.get ``status: {state: DONE, errorResult: {reason: backendError, ...},
errors: [...]}``; getQueryResults the error itself (HTTP 500, as BigQuery's API answers a
backendError). The emulator's own record of the job is unchanged (it ran it and succeeded).

A bigquery_job_slow fault sets ``JobTable.slow`` for its window: a job inserted then (by the
target service, or any) runs a time drawn from the fault's latency longer, on the scenario's
clock like the run time itself (divided by the time scale: the job is RUNNING to jobs.get
that much longer). Every job's run time, slowed or not, is kept in ``JobTable.runs`` for the
run's ``bigquery_job/<service>`` histograms.

Everything else passes through unchanged. One proxy (one port) per calling service, since
the run time belongs to the service's job step, and one job table shared by all of them, so
a job inserted through one service's proxy is RUNNING for another service's jobs.get too.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass, field

from . import service_http
from .front import HOP_HEADERS, _respond, cold_start_sample

INSERT = re.compile(r"^/bigquery/v2/projects/[^/]+/jobs/?$")
GET = re.compile(r"^/bigquery/v2/projects/[^/]+/jobs/([^/]+)$")
RESULTS = re.compile(r"^/bigquery/v2/projects/[^/]+/queries/([^/]+)$")


@dataclass
class Failing:
    """Jobs inserted while this is set fail with probability `rate` (those of `service` only,
    when given)."""

    rate: float = 1.0
    service: str | None = None
    reason: str = "backendError"
    message: str = "The job encountered an internal error during execution and was unable to complete successfully."


@dataclass
class Slow:
    """Jobs inserted while this is set run longer by a log-normal draw through p50/p99
    (scenario seconds; those of `service` only, when given)."""

    p50: float
    p99: float | None = None
    service: str | None = None


@dataclass
class JobTable:
    """job id -> the monotonic time it is done; shared by every service's proxy."""

    done_at: dict[str, float] = field(default_factory=dict)
    inserted: int = 0
    delayed_reads: int = 0
    """jobs.get / getQueryResults answered 'still running'."""
    failing: Failing | None = None
    """A bigquery_job_failure fault's window is open: jobs inserted now may fail."""
    failed: dict[str, dict] = field(default_factory=dict)
    """job id -> the errorResult it ends with."""
    failed_reads: int = 0
    """jobs.get / getQueryResults answered with a failed job's error."""
    slow: Slow | None = None
    """A bigquery_job_slow fault's window is open: jobs inserted now run longer."""
    slowed: int = 0
    """Jobs a slow window lengthened."""
    added_s: float = 0.0
    """Wall seconds slow windows added, summed over the jobs they lengthened."""
    runs: list[tuple[str, float, float]] = field(default_factory=list)
    """(inserting service, monotonic insert time, wall run time) of every job inserted."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def running_count(self) -> int:
        now = time.monotonic()
        return sum(1 for at in list(self.done_at.values()) if at > now)

    def running(self, job_id: str) -> bool:
        at = self.done_at.get(job_id)
        return at is not None and time.monotonic() < at


def as_failed(job: dict, error: dict) -> dict:
    """A job resource as jobs.get shows it once the job has failed."""
    out = dict(job)
    out["status"] = {"state": "DONE", "errorResult": error, "errors": [error]}
    return out


def error_body(error: dict) -> bytes:
    """BigQuery's API error for a failed job's results (google.api_core reads `error`)."""
    return json.dumps({"error": {"code": 500, "message": error["message"], "status": "INTERNAL",
                                 "errors": [{**error, "domain": "global"}]}}).encode()


def as_running(job: dict) -> dict:
    """A job resource as jobs.get shows it while the job runs."""
    out = dict(job)
    out["status"] = {"state": "RUNNING"}
    stats = {k: v for k, v in (job.get("statistics") or {}).items() if k != "endTime"}
    stats.pop("query", None)  # bytes processed, DML counts: known only at the end
    out["statistics"] = stats
    return out


class JobClock:
    """ASGI app: serve with emulators.front.serve(clock, port)."""

    def __init__(self, upstream: str, table: JobTable, *, p50: float | None = None, p99: float | None = None,
                 time_scale: float = 1.0, seed: int = 0, timeout: float = 60.0, service: str | None = None) -> None:
        """upstream: the emulator's REST base URL; p50/p99: the inserting service's job run
        time in scenario seconds (None: its jobs are done when the emulator says so);
        service: the inserting service (a bigquery_job_failure's target)."""
        self.upstream = upstream.rstrip("/")
        self.service = service
        self.table = table
        self.p50, self.p99 = p50, p99
        self.time_scale = time_scale
        self.rng = random.Random(seed)
        # a stream of its own, so that a slow window leaves every other job's draws as they were
        self.slow_rng = random.Random(f"{seed}:slow")
        self.timeout = timeout
        self.http = None

    def run_time(self) -> float:
        """Wall seconds the next inserted job runs."""
        if not self.p50:
            return 0.0
        return cold_start_sample(self.rng, self.p50, self.p99) / self.time_scale

    def _slowdown(self) -> float:
        """Wall seconds a slow window adds to the job being inserted (0 when none is open)."""
        slow = self.table.slow
        if slow is None or slow.service not in (None, self.service):
            return 0.0
        return cold_start_sample(self.slow_rng, slow.p50, slow.p99) / self.time_scale

    def _fails(self) -> dict | None:
        """The errorResult of the job being inserted, if a failure window says it fails."""
        failing = self.table.failing
        if failing is None or failing.service not in (None, self.service) or self.rng.random() >= failing.rate:
            return None
        return {"reason": failing.reason, "message": failing.message}

    def _count_running(self) -> None:
        with self.table.lock:
            self.table.delayed_reads += 1

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    if self.http is not None:
                        await self.http.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if self.http is None:
            self.http = service_http.session(self.timeout)
        body = await service_http.read_body(receive)
        path, method = scope["path"], scope["method"]
        query = scope["query_string"].decode()
        job_id = None
        if method == "GET" and (m := GET.match(path) or RESULTS.match(path)):
            job_id = m.group(1)
            if RESULTS.match(path) and self.table.running(job_id):  # the job's rows are not there yet
                self._count_running()
                project = path.split("/")[4]
                return await _json(send, {"kind": "bigquery#getQueryResultsResponse", "jobComplete": False,
                                          "jobReference": {"projectId": project, "jobId": job_id}})
            if RESULTS.match(path) and job_id in self.table.failed:
                with self.table.lock:
                    self.table.failed_reads += 1
                return await _respond(send, 500, error_body(self.table.failed[job_id]),
                                      [(b"content-type", b"application/json; charset=UTF-8")])
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        fwd = {k: v for k, v in headers.items() if k not in HOP_HEADERS}
        url = self.upstream + path + (f"?{query}" if query else "")
        try:
            async with self.http.request(method, url, data=body, headers=fwd) as r:
                status, content, rh = r.status, await r.read(), r.headers
        except service_http.FAILURES:
            return await _respond(send, 503, b"BigQuery emulator unavailable\n")
        out = [(k.encode(), v.encode()) for k, v in rh.items() if k.lower() not in HOP_HEADERS]
        if status == 200 and method == "POST" and INSERT.match(path):
            job = _parse(content, rh)
            ref = (job or {}).get("jobReference") or {}
            if ref.get("jobId"):
                run = self.run_time()
                # a job the emulator already failed (a bad query) keeps its own error
                error = None if ((job or {}).get("status") or {}).get("errorResult") else self._fails()
                added = self._slowdown()
                run += added
                with self.table.lock:
                    self.table.inserted += 1
                    self.table.runs.append((self.service or "", time.monotonic(), run))
                    if added > 0:
                        self.table.slowed += 1
                        self.table.added_s += added
                    if run > 0:
                        self.table.done_at[ref["jobId"]] = time.monotonic() + run
                    if error is not None:
                        self.table.failed[ref["jobId"]] = error
                if run > 0:
                    return await _json(send, as_running(job))
                if error is not None:
                    return await _json(send, as_failed(job, error))
        elif status == 200 and job_id is not None and GET.match(path) and self.table.running(job_id):
            job = _parse(content, rh)  # decided after the emulator answered: counted only if so answered
            if job is not None:
                self._count_running()
                return await _json(send, as_running(job))
        elif status == 200 and job_id is not None and GET.match(path) and job_id in self.table.failed:
            job = _parse(content, rh)
            if job is not None:
                with self.table.lock:
                    self.table.failed_reads += 1
                return await _json(send, as_failed(job, self.table.failed[job_id]))
        await _respond(send, status, content, out)


def _parse(content: bytes, headers) -> dict | None:
    if "gzip" in headers.get("Content-Encoding", ""):
        import gzip

        content = gzip.decompress(content)
    try:
        obj = json.loads(content)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


async def _json(send, obj: dict) -> None:
    await _respond(send, 200, json.dumps(obj).encode(), [(b"content-type", b"application/json; charset=UTF-8")])
