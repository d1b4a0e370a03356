"""The part of the Cloud Run Admin API (v2) a workflow's jobs.run connector uses, served in
the harness (the fronts' loop) so that an execution a workflow starts goes through the live
run's Launcher: recorded in jobs/<execution>.json, counted in totals.jobs, judged by the
job.NAME SLOs and the jobs check like one a scenario source starts.

    POST /v2/projects/P/locations/L/jobs/J:run           RunJobRequest -> Operation (done: false)
    GET  /v2/projects/P/locations/L/operations/ID        Operation (done, response: Execution | error)
    GET  /v2/projects/P/locations/L/jobs/J/executions/E  Execution

Errors are Google's `{"error": {code, message, status}}`: 404 NOT_FOUND for a job the system
does not have (or another project), 400 INVALID_ARGUMENT for an override this harness does
not apply, 412 FAILED_PRECONDITION when no live run is going (`surgesim up` has no scenario
clock and no run directory to record executions in). The workflow services find it through
SURGESIM_RUN_API_URL (surgesim/live/runner.py), as they find Pub/Sub through PUBSUB_URL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re

from surgesim.emulators.service_http import read_body

_RUN = re.compile(r"^/v2/projects/([^/]+)/locations/([^/]+)/jobs/([^/:]+):run$")
_OPERATION = re.compile(r"^/v2/projects/([^/]+)/locations/([^/]+)/operations/([^/]+)$")
_EXECUTION = re.compile(r"^/v2/projects/([^/]+)/locations/([^/]+)/jobs/([^/]+)/executions/([^/]+)$")
_CONDITION = {"succeeded": "CONDITION_SUCCEEDED", "failed": "CONDITION_FAILED", "cancelled": "CONDITION_FAILED"}


def _time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def execution_resource(ex, project: str, location: str) -> dict:
    """A live Execution (surgesim/live/jobs.py) as Cloud Run v2's Execution resource."""
    r = ex.record
    states = [t["state"] for t in r["tasks"]]
    done = ex.done()
    out = {
        "name": f"projects/{project}/locations/{location}/jobs/{r['job']}/executions/{ex.name}",
        "job": r["job"], "createTime": _time(ex.created), "startTime": _time(r["start"]),
        "completionTime": _time(r["end"]) if done else None,
        "taskCount": r["task_count"], "parallelism": r["parallelism"],
        "runningCount": states.count("running"), "succeededCount": states.count("succeeded"),
        "failedCount": states.count("failed"), "cancelledCount": states.count("cancelled"),
        "retriedCount": sum(max(len(t["attempts"]) - 1, 0) for t in r["tasks"]),
        "reconciling": not done,
        "conditions": [{"type": "Completed", "state": _CONDITION.get(r["state"], "CONDITION_PENDING")}],
        "labels": {"run.googleapis.com/execution-environment": "surgesim-local"},
        "logUri": f"file://{ex.path}",
    }
    return {k: v for k, v in out.items() if v is not None}


class RunApi:
    """The ASGI app; `launcher` is attached by the live run once its clock exists."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.launcher = None
        self.locations: dict[str, str] = {}
        """execution name -> the location it was started in (its resource names say it)."""

    def operation(self, ex) -> dict:
        location = self.locations.get(ex.name, "local")
        resource = execution_resource(ex, self.project, location)
        op: dict = {"name": f"projects/{self.project}/locations/{location}/operations/{ex.name}",
                    "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Execution", **resource},
                    "done": ex.done()}
        if not ex.done():
            return op
        r = ex.record
        if r["state"] == "succeeded":
            op["response"] = {"@type": "type.googleapis.com/google.cloud.run.v2.Execution", **resource}
        else:
            failed = [t["index"] for t in r["tasks"] if t["state"] != "succeeded"]
            op["error"] = {"code": 1 if r["state"] == "cancelled" else 2,  # google.rpc.Code CANCELLED / UNKNOWN
                           "message": f"Execution {ex.name} {r['state']}: {r['failed']} of {r['task_count']} "
                                      f"task(s) failed (tasks {failed}); record {ex.path}"}
        return op

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        # who calls (the workflow and its step) travels in headers, outside Google's request body
        caller = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])
                  if k.decode().lower() in ("x-surgesim-workflow", "x-surgesim-step")}
        status, payload = await asyncio.get_running_loop().run_in_executor(
            None, self.handle, scope["method"], scope["path"], body, caller)
        data = json.dumps(payload, default=str).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    def handle(self, method: str, path: str, body: bytes, caller: dict | None = None) -> tuple[int, dict]:
        """(status, JSON) for one request; off the event loop (starting tasks forks processes)."""
        if (m := _RUN.match(path)) and method == "POST":
            return self._run(m.group(1), m.group(2), m.group(3), body, caller or {})
        if (m := _OPERATION.match(path)) and method == "GET":
            return self._get(m.group(1), m.group(3), None)
        if (m := _EXECUTION.match(path)) and method == "GET":
            return self._get(m.group(1), m.group(4), m.group(3))
        return _error(404, "NOT_FOUND", f"{method} {path}: not a method of this Cloud Run Admin API stand-in")

    def _run(self, project: str, location: str, job: str, body: bytes, caller: dict) -> tuple[int, dict]:
        if self.launcher is None:
            return _error(412, "FAILED_PRECONDITION", f"job {job}: Cloud Run jobs start only in a `surgesim live` "
                                                      "run (no run directory or scenario clock here)")
        if project != self.project:
            return _error(404, "NOT_FOUND", f"projects/{project}/locations/{location}/jobs/{job}: not found "
                                            f"(this run's project is {self.project})")
        if job not in self.launcher.jobs:
            return _error(404, "NOT_FOUND", f"projects/{project}/locations/{location}/jobs/{job}: not found; "
                                            f"the system's jobs: {', '.join(self.launcher.jobs) or 'none'}")
        try:
            request = json.loads(body or b"{}")
            tasks, env = _overrides(request)
        except (ValueError, TypeError) as exc:
            return _error(400, "INVALID_ARGUMENT", f"job {job}: {exc}")
        started_by = {"kind": "workflow", "workflow": caller.get("x-surgesim-workflow"),
                      "step": caller.get("x-surgesim-step")}
        try:
            ex = self.launcher.start(job, tasks=tasks, env=env, started_by=started_by)
        except ValueError as exc:  # no command: to run live
            return _error(412, "FAILED_PRECONDITION", str(exc))
        self.locations[ex.name] = location
        return 200, self.operation(ex)

    def _get(self, project: str, name: str, job: str | None) -> tuple[int, dict]:
        ex = self.launcher.find(name) if self.launcher is not None and project == self.project else None
        if ex is None or (job is not None and ex.job.name != job):
            return _error(404, "NOT_FOUND", f"execution {name}: not found")
        if job is not None:
            return 200, execution_resource(ex, self.project, self.locations.get(ex.name, "local"))
        return 200, self.operation(ex)


def _overrides(request) -> tuple[int | None, dict[str, str]]:
    """(taskCount, env) of a RunJobRequest; what this harness cannot apply is refused, not ignored."""
    if not isinstance(request, dict):
        raise ValueError("the request body is a RunJobRequest object")
    extra = set(request) - {"overrides", "validateOnly", "etag"}
    if extra:
        raise ValueError(f"unknown RunJobRequest field(s) {sorted(extra)}")
    if request.get("validateOnly"):
        raise ValueError("validateOnly is not supported locally")
    o = request.get("overrides") or {}
    if not isinstance(o, dict):
        raise ValueError("overrides is an object")
    extra = set(o) - {"taskCount", "containerOverrides"}
    if extra:
        raise ValueError(f"overrides {sorted(extra)} are not applied locally (taskCount and containerOverrides "
                         "env are)")
    tasks = o.get("taskCount")
    if tasks is not None and (not isinstance(tasks, int) or isinstance(tasks, bool) or not 1 <= tasks <= 10_000):
        raise ValueError(f"overrides.taskCount is a whole number 1-10000, got {tasks!r}")
    env: dict[str, str] = {}
    containers = o.get("containerOverrides") or []
    if not isinstance(containers, list) or len(containers) > 1:
        raise ValueError("overrides.containerOverrides is a list of one container (a local job has one command)")
    for c in containers:
        extra = set(c) - {"name", "env"} if isinstance(c, dict) else {"?"}
        if extra:
            raise ValueError(f"containerOverrides {sorted(extra)} are not applied locally (env is)")
        for v in c.get("env") or []:
            if not isinstance(v, dict) or not isinstance(v.get("name"), str) or "valueSource" in v:
                raise ValueError(f"containerOverrides env entries are {{name, value}}, got {v!r}")
            env[v["name"]] = str(v.get("value", ""))
    return tasks, env


def _error(code: int, status: str, message: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "message": message, "status": status}}
