"""Job faults live: task attempts of a Cloud Run Job that crash or hang.

    job_task_crash   the attempt's process group is killed (SIGKILL) `after` seconds into
                     the attempt: a non-zero exit (-9), as an OOM kill or a segfault gives;
                     the job's retries (max_retries) re-run the task.
    job_task_hang    the attempt's process group is stopped (SIGSTOP) `after` seconds into
                     the attempt: it makes no progress and exits by itself never, so the job's
                     task_timeout kills it (surgesim/live/jobs.py) and it counts as timed out.

A fault hits the first `count` attempts of job `target` (of task `task` when given) that
start while it is active (from `at` to `at + duration`, scenario time). What it did is in
faults.json's details (`attempts`: execution, task, attempt, pid) and on each attempt's
record (`fault`). Applied by FaultInjector (start/end) and by Execution (each attempt
start calls on_attempt), so it lives apart from both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field

KINDS = ("job_task_crash", "job_task_hang")
SIGNALS = {"job_task_crash": signal.SIGKILL, "job_task_hang": signal.SIGSTOP}


def unsupported(fault, jobs) -> str | None:
    """Why `fault` (a job fault) cannot be injected in this run, or None."""
    job = next((j for j in jobs if j.name == fault.target), None)
    if job is None:
        return f"{fault.target!r} is not a job of this system"
    if not job.command:
        return f"job {fault.target} has no command: its tasks do not run live"
    return None


@dataclass
class _Active:
    fault: object
    details: dict
    left: int
    attempts: list[dict] = field(default_factory=list)


class TaskFaults:
    """The job faults active now; Execution asks on_attempt at each task attempt's start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: list[_Active] = []

    def start(self, fault, details: dict) -> None:
        """Arm `fault`; `details` (its faults.json details) gets the attempts it hits."""
        details["attempts"] = []
        with self._lock:
            self._active.append(_Active(fault, details, fault.count, details["attempts"]))

    def end(self, fault) -> int:
        """Disarm `fault`; returns how many attempts it hit."""
        with self._lock:
            for a in list(self._active):
                if a.fault is fault:
                    self._active.remove(a)
                    return len(a.attempts)
        return 0

    def on_attempt(self, job: str, execution: str, index: int, attempt: int, proc: subprocess.Popen) -> str | None:
        """Called when a task attempt's process has started: the fault kind applied to it
        (its signal is sent `after` seconds on, on a timer), or None."""
        with self._lock:
            hit = next((a for a in self._active if a.left > 0 and a.fault.target == job
                        and (a.fault.task is None or a.fault.task == index)), None)
            if hit is None:
                return None
            hit.left -= 1
            hit.attempts.append({"execution": execution, "task": index, "attempt": attempt, "pid": proc.pid})
        kind = hit.fault.kind
        delay = float(hit.fault.after or 0.0)

        def fire() -> None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, SIGNALS[kind])
                except ProcessLookupError:
                    pass

        if delay <= 0:
            fire()
        else:
            timer = threading.Timer(delay, fire)
            timer.daemon = True
            timer.start()
        return kind
