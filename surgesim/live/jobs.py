"""Cloud Run Jobs in a live run: an execution of a job's `command:` as `tasks` task
processes, at most `parallelism` at once, each told its shard through the variables
Cloud Run sets (CLOUD_RUN_TASK_INDEX/COUNT/ATTEMPT, CLOUD_RUN_EXECUTION, CLOUD_RUN_JOB).

A task that exits non-zero, or runs past `task_timeout` (its whole process group is
killed), is a failed attempt; it is re-run at once with CLOUD_RUN_TASK_ATTEMPT + 1 until
it succeeds or has used `max_retries` retries. The execution fails when any task does;
the other tasks still run to the end, as in Cloud Run.

The records (execution and per-task attempts: state, exit code, start/end, duration) are
written as JSON to `<run_dir>/jobs/<execution>.json`, each attempt's output to a log
beside it. Times are wall-clock epoch seconds so they line up with the run's other logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import string
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from surgesim.loadtests.runner import _kill_group  # the harness's one way to end a process group
from surgesim.schema.system import Job


#: A task may write its own counters here (a JSON object of numbers), e.g. rows written or
#: API calls rate-limited; the attempt's record keeps them and totals.jobs sums them.
COUNTERS_VAR = "SURGESIM_TASK_COUNTERS"


def read_counters(path: Path) -> dict[str, float]:
    """The numbers in a task's counters file ({} when it wrote none or wrote garbage)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def execution_name(job: str) -> str:
    """`<job>-<5 lowercase letters/digits>`, the shape of Cloud Run's execution names."""
    alphabet = string.ascii_lowercase + string.digits
    return f"{job}-" + "".join(secrets.choice(alphabet) for _ in range(5))


def task_env(job: str, execution: str, index: int, count: int, attempt: int) -> dict[str, str]:
    """The variables Cloud Run sets in every task's container (container runtime contract)."""
    return {"CLOUD_RUN_JOB": job, "CLOUD_RUN_EXECUTION": execution,
            "CLOUD_RUN_TASK_INDEX": str(index), "CLOUD_RUN_TASK_COUNT": str(count),
            "CLOUD_RUN_TASK_ATTEMPT": str(attempt)}



class Execution:
    """One execution of a job. `start()` runs it in a background thread; `run()` blocks."""

    def __init__(self, job: Job, run_dir: str | Path, env: Mapping[str, str] | None = None, *,
                 command: Sequence[str] | None = None, tasks: int | None = None,
                 parallelism: int | None = None, name: str | None = None, on_attempt=None,
                 started_by: Mapping | None = None, scenario_start_s: float | None = None):
        self.job = job
        self.created = time.time()
        self.on_attempt = on_attempt
        """on_attempt(job, execution, index, attempt, proc) -> fault kind or None, at each
        attempt's start (surgesim/live/job_faults.py)."""
        self.command = list(command or job.command or [])
        if not self.command:
            raise ValueError(f"job {job.name}: no command: to run its tasks live")
        if self.command[0] in ("python", "python3"):
            # the interpreter surgesim runs in, so `python -m package.task` finds the same packages
            self.command[0] = sys.executable
        self.tasks = tasks or job.tasks
        self.parallelism = min(parallelism or job.parallelism, self.tasks)
        self.name = name or execution_name(job.name)
        self.env = dict(env or {})
        self.dir = Path(run_dir) / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{self.name}.json"
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._running: dict[int, subprocess.Popen] = {}
        self._thread: threading.Thread | None = None
        self.record: dict = {
            "job": job.name, "execution": self.name, "command": self.command, "state": "pending",
            "task_count": self.tasks, "parallelism": self.parallelism,
            "max_retries": job.max_retries, "task_timeout_s": job.task_timeout,
            # what started it ({kind: once | schedule, source, due_s} or {kind: workflow, ...}),
            # and when on the scenario clock: a schedule's starts are checked against these
            "started_by": dict(started_by or {}), "scenario_start_s": scenario_start_s,
            "start": None, "end": None, "duration_s": None,
            "succeeded": 0, "failed": 0, "retries": 0,
            "tasks": [{"index": i, "state": "pending", "attempts": []} for i in range(self.tasks)],
        }

    # -- running --------------------------------------------------------------------

    def start(self) -> "Execution":
        self._thread = threading.Thread(target=self.run, name=f"job-{self.name}", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> dict:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.record

    def done(self) -> bool:
        return self.record["state"] in ("succeeded", "failed", "cancelled")

    def stop(self) -> None:
        """Cancel: no new attempts; running task groups are killed."""
        self._stopping.set()
        with self._lock:
            running = list(self._running.values())
        for p in running:
            _kill_group(p)
        self.wait(30)

    def run(self) -> dict:
        r = self.record
        r["state"], r["start"] = "running", time.time()
        self._save()
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix=f"{self.name}-task") as pool:
            list(pool.map(self._run_task, range(self.tasks)))
        r["end"] = time.time()
        r["duration_s"] = round(r["end"] - r["start"], 3)
        states = [t["state"] for t in r["tasks"]]
        r["succeeded"], r["failed"] = states.count("succeeded"), states.count("failed")
        r["retries"] = sum(max(len(t["attempts"]) - 1, 0) for t in r["tasks"])
        r["state"] = ("cancelled" if self._stopping.is_set() and r["succeeded"] < self.tasks
                      else "succeeded" if r["succeeded"] == self.tasks else "failed")
        self._save()
        return r

    def _run_task(self, index: int) -> None:
        task = self.record["tasks"][index]
        task["state"] = "running"
        for attempt in range(self.job.max_retries + 1):
            if self._stopping.is_set():
                task["state"] = "cancelled"
                return
            a = self._attempt(index, attempt)
            task["attempts"].append(a)
            self._save()
            if a["exit_code"] == 0:
                task["state"] = "succeeded"
                break
        else:
            task["state"] = "failed"
        task["exit_code"] = task["attempts"][-1]["exit_code"]
        task["start"] = task["attempts"][0]["start"]
        task["end"] = task["attempts"][-1]["end"]
        task["duration_s"] = round(task["end"] - task["start"], 3)
        self._save()

    def _attempt(self, index: int, attempt: int) -> dict:
        log_path = self.dir / f"{self.name}-task{index}-attempt{attempt}.log"
        counters_path = self.dir / f"{self.name}-task{index}-attempt{attempt}.counters.json"
        env = {**os.environ, **self.env, **task_env(self.job.name, self.name, index, self.tasks, attempt),
               COUNTERS_VAR: str(counters_path)}
        began = time.time()
        with open(log_path, "wb") as log:
            p = subprocess.Popen(self.command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        with self._lock:
            self._running[index] = p
        fault = self.on_attempt(self.job.name, self.name, index, attempt, p) if self.on_attempt else None
        timed_out = False
        try:
            p.wait(self.job.task_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            # TERM before CONT: a stopped (hung) group holds the TERM pending and meets it the
            # moment it is continued, before it runs one more instruction. CONT first let a task
            # whose sleep had run out while stopped finish its work before the TERM arrived.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
                os.killpg(p.pid, signal.SIGCONT)
            _kill_group(p)
        finally:
            with self._lock:
                self._running.pop(index, None)
        end = time.time()
        code = p.returncode
        if timed_out and code == 0:
            code = -signal.SIGTERM  # a task that exits cleanly on TERM still timed out
        out = {"attempt": attempt, "pid": p.pid, "start": began, "end": end,
                "duration_s": round(end - began, 3), "exit_code": code, "timed_out": timed_out,
                "log": str(log_path), "counters": read_counters(counters_path)}
        if fault:
            out["fault"] = fault
        return out

    def _save(self) -> None:
        with self._lock:
            text = json.dumps(self.record, indent=1, default=str)
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(text)
            tmp.replace(self.path)  # a reader never sees half a record


def summary(executions: Sequence[Execution]) -> dict[str, dict]:
    """Per job, what the run's `totals.jobs` carries: the last execution's outcome plus
    counts over all of them (task_seconds is what Cloud Run Jobs bills)."""
    out: dict[str, dict] = {}
    for ex in executions:
        r = ex.record
        j = out.setdefault(r["job"], {"executions": 0, "failed_executions": 0, "tasks_succeeded": 0,
                                      "tasks_failed": 0, "retries": 0, "crashes": 0, "timeouts": 0,
                                      "task_seconds": 0.0})
        j["executions"] += 1
        j["failed_executions"] += r["state"] != "succeeded"
        j["tasks_succeeded"] += r["succeeded"]
        j["tasks_failed"] += r["failed"]
        j["retries"] += r["retries"]
        attempts = [a for t in r["tasks"] for a in t["attempts"]]
        j["timeouts"] += sum(a["timed_out"] for a in attempts)
        j["crashes"] += sum(1 for a in attempts if a["exit_code"] not in (0, None) and not a["timed_out"])
        j["task_seconds"] = round(j["task_seconds"] + sum(a["duration_s"] for a in attempts), 3)
        for a in attempts:  # the tasks' own counters, summed over every attempt
            for k, v in a.get("counters", {}).items():
                j.setdefault("counters", {})[k] = round(j.get("counters", {}).get(k, 0) + v, 3)
        j["state"], j["duration_s"], j["record"] = r["state"], r["duration_s"], str(ex.path)
    for j in out.values():  # e.g. rows written per wall second of the job's executions
        if j.get("counters") and j["duration_s"]:
            j["counters_per_s"] = {k: round(v / j["duration_s"], 3) for k, v in j["counters"].items()}
    return out


class Launcher:
    """Starts a live run's job executions: each `job:` source's (kind once at its `at:`,
    kind schedule at each time its cron names, both on the scenario clock) from tick(),
    and any other caller's through start() (a workflow's jobs.run step, through the run's
    Cloud Run Admin API stand-in, surgesim/live/run_api.py), so every execution is
    recorded, totalled and judged the same way. `env_for(job)` gives the task environment
    (the emulators, the fakes' and services' URLs); plan_jobs may override `tasks` /
    `parallelism` per job."""

    def __init__(self, sources, jobs: Sequence[Job], run_dir: str | Path, env_for, *,
                 plan_jobs: Mapping | None = None, say=print, on_attempt=None,
                 start_clock: float = 0.0, duration: float | None = None, time_scale: float = 1.0):
        self.on_attempt = on_attempt
        self.jobs = {j.name: j for j in jobs}
        job_sources = [s for s in sources if getattr(s, "job", None) is not None]
        for s in job_sources:
            if s.job not in self.jobs:
                raise ValueError(f"source {s.name}: job {s.job!r} is not in the system file")
            if not self.jobs[s.job].command:
                raise ValueError(f"source {s.name}: job {s.job} has no command: to run its tasks live")
            if s.kind == "schedule" and duration is None:
                raise ValueError(f"source {s.name}: a schedule needs the scenario's duration")
        horizon = float("inf") if duration is None else float(duration)
        self.pending: list[tuple[float, object]] = sorted(
            ((t, s) for s in job_sources for t in s.start_times(start_clock, horizon)), key=lambda p: p[0])
        self.run_dir, self.env_for, self.plan_jobs, self.say = Path(run_dir), env_for, plan_jobs or {}, say
        self.time_scale = float(time_scale)
        self.executions: list[Execution] = []
        self._lock = threading.Lock()  # start() comes from the run loop and from the Run API's thread
        self._clock: tuple[float, float] | None = None  # (monotonic, scenario s) at the last tick

    def now_s(self) -> float | None:
        """The scenario clock now (from the last tick, advanced at time_scale); None before the first."""
        if self._clock is None:
            return None
        mono, scenario_s = self._clock
        return round(scenario_s + (time.monotonic() - mono) * self.time_scale, 3)

    def tick(self, scenario_s: float) -> None:
        self._clock = (time.monotonic(), scenario_s)
        while self.pending and self.pending[0][0] <= scenario_s:
            due, src = self.pending.pop(0)
            self.start(src.job, started_by={"kind": src.kind, "source": src.name, "due_s": round(due, 3)})

    def start(self, job_name: str, *, tasks: int | None = None, env: Mapping[str, str] | None = None,
              started_by: Mapping | None = None) -> Execution:
        """Start one execution of `job_name` now (tasks: this execution's task count, as
        Cloud Run's taskCount override; env: added to every task's environment, as a
        containerOverrides env). LookupError for a job the system does not have, ValueError
        for one that cannot run live."""
        job = self.jobs.get(job_name)
        if job is None:
            raise LookupError(f"job {job_name!r} is not in the system file (jobs: {', '.join(self.jobs) or 'none'})")
        if not job.command:
            raise ValueError(f"job {job_name} has no command: to run its tasks live")
        jp = self.plan_jobs.get(job_name)
        ex = Execution(job, self.run_dir, {**self.env_for(job.name), **(env or {})},
                       tasks=tasks or getattr(jp, "tasks", None), parallelism=getattr(jp, "parallelism", None),
                       on_attempt=self.on_attempt, started_by=started_by, scenario_start_s=self.now_s())
        with self._lock:
            self.executions.append(ex.start())
        by = dict(started_by or {})
        self.say(f"job {job.name}: execution {ex.name} started ({ex.tasks} tasks, parallelism {ex.parallelism}; "
                 f"{by.get('kind', 'direct')} {by.get('source') or by.get('workflow') or ''})".rstrip())
        return ex

    def find(self, execution: str) -> Execution | None:
        with self._lock:
            return next((ex for ex in self.executions if ex.name == execution), None)

    def _all(self) -> list[Execution]:
        with self._lock:
            return list(self.executions)

    def idle(self) -> bool:
        """Nothing left to start and every execution finished."""
        return not self.pending and all(ex.done() for ex in self._all())

    def stop(self) -> None:
        """Cancel what still runs (the drain timed out, or the run is interrupted)."""
        for ex in self._all():
            if not ex.done():
                ex.stop()

    def finish(self) -> None:
        """After the drain: cancel what still runs and say which executions failed (the
        verdict fails for them; this says why)."""
        self.stop()
        for ex in self._all():
            r = ex.record
            if r["state"] != "succeeded":
                self.say(f"job {r['job']}: execution {ex.name} {r['state']}: {r['failed']} of {r['task_count']} "
                         f"tasks failed (record: {ex.path})")

    def failed(self) -> list[str]:
        return [ex.name for ex in self._all() if ex.record["state"] != "succeeded"]

    def totals(self) -> dict[str, dict]:
        return summary(self._all())

    def records(self, time_scale: float) -> dict[str, dict]:
        """jobs.json (the `job.NAME` SLOs): per job, first start to last end in scenario
        seconds (wall × time_scale; None while one still runs), `succeeded` only if every
        execution did, and each execution's start on the scenario clock (`starts_s`)."""
        out: dict[str, dict] = {}
        executions = self._all()
        for name in dict.fromkeys(ex.job.name for ex in executions):
            exs = [ex.record for ex in executions if ex.job.name == name]
            ok = all(r["state"] == "succeeded" for r in exs)
            ends = [r["end"] for r in exs if r["end"] is not None]
            state = "succeeded" if ok else next(r["state"] for r in exs if r["state"] != "succeeded")
            out[name] = {"state": state, "executions": len(exs),
                         "tasks_gave_up": sum(r["failed"] for r in exs),
                         "starts_s": [r["scenario_start_s"] for r in exs],
                         # finished (succeeded or failed): the SLO reads state, calibration both
                         "duration_s": round((max(ends) - min(r["start"] for r in exs)) * time_scale, 3)
                         if len(ends) == len(exs) and all(r["start"] for r in exs) else None}
        return out
