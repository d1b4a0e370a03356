"""Locust workers on other machines: `surgesim live --master` and `surgesim worker`.

The schedule is split exactly as with `--workers N` on one machine (locust_users.py: each
worker sends every N-th send of the one seeded timetable, N = the master's
--expect-workers, its index from the master). What differs is where the results land: a
worker started by `surgesim worker` writes them on its own disk, so it also sends them to
the master over Locust's own connection (a custom message, before it reports itself
stopped), and the master writes them to SURGESIM_OUT_DIR/worker-<index>/, where
run_locust merges them as it does local workers' (recorder.merge_results).

This module is imported by locust_users.py (its listeners must be registered in the
Locust process); `run_worker` is what `surgesim worker` runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RESULT_MESSAGE = "surgesim_result"
RESULT_FILES = ("loadgen.json", "histograms.parquet")
FORWARD_VAR = "SURGESIM_FORWARD_RESULTS"
"""Set to 1 by `surgesim worker`: this worker's results go to the master too."""
REMOTE_VAR = "SURGESIM_REMOTE_WORKERS"
"""Set to 1 by run_locust(master=...): this master's workers send their results."""


def register(environment) -> None:
    """On a master for `surgesim worker`s (Locust's init event): accept their results, and
    stop them before quitting. Locust's headless end of a shape test sends `quit` and
    exits 0.5 s later, too soon for a worker elsewhere to write and send its results (a
    live run's master lost them on a loaded machine); a `stop` first makes each worker
    send them before it reports itself stopped, and Locust's stop() waits for that."""
    from locust.runners import MasterRunner

    runner = environment.runner
    if not (isinstance(runner, MasterRunner) and os.environ.get(REMOTE_VAR) == "1"
            and os.environ.get("SURGESIM_OUT_DIR")):
        return
    runner.register_message(RESULT_MESSAGE, _receive)
    quit_now = runner.quit

    def quit_after_results() -> None:
        runner.stop()  # `stop` to every worker; returns once none runs a user (at most stop_timeout + 60 s)
        quit_now()

    runner.quit = quit_after_results


def _receive(environment, msg, **_kw) -> None:
    from surgesim.loadtests.runner import worker_dir

    d = worker_dir(os.environ["SURGESIM_OUT_DIR"], int(msg.data["index"]))
    d.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:  # only these names: nothing else from the wire touches the disk
        data = msg.data["files"].get(name)
        if data is not None:
            (d / name).write_bytes(data)


def forward(environment, written: Path) -> None:
    """On a worker started by `surgesim worker`: send the result files it just wrote to
    its master. Called from the test_stop listener, which runs before the worker tells
    the master it stopped; messages arrive in order, so the master has them before it
    counts this worker as stopped."""
    from locust.runners import WorkerRunner

    if os.environ.get(FORWARD_VAR) != "1" or not isinstance(environment.runner, WorkerRunner):
        return
    files = {name: (written / name).read_bytes() for name in RESULT_FILES if (written / name).exists()}
    environment.runner.send_message(RESULT_MESSAGE, {"index": environment.runner.worker_index, "files": files})


def parse_master(value: str, default_port: int = 5557) -> tuple[str, int]:
    """HOST[:PORT] -> (host, port); Locust's default port 5557."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: want HOST or HOST:PORT")
    return host, int(port)


def worker_command(master: tuple[str, int], locustfile: str | Path | None = None) -> list[str]:
    from surgesim.loadtests.runner import LOCUSTFILE

    return [sys.executable, "-m", "locust", "-f", str(locustfile or LOCUSTFILE), "--worker",
            "--master-host", master[0], "--master-port", str(master[1]), "--loglevel", "WARNING"]


def run_worker(scenario_path: str | Path, master: tuple[str, int], target_env: dict[str, str], *,
               out_dir: str | Path | None = None, time_scale: float | None = None,
               rate_scale: float | None = None, duration_s: float | None = None, sources: list[str] | None = None,
               locustfile: str | Path | None = None, log=None) -> int:
    """A Locust worker for `master`, sending its share of SCENARIO's schedule to the
    endpoints in target_env (read_target_env), until the master ends the test. Runs in
    the foreground (its own process group, killed with it on Ctrl-C) and returns Locust's
    exit code. The scales and duration must be the master's: the merge refuses results of
    other scales (recorder.merge_results), and a different duration is a different schedule."""
    from surgesim.loadtests.plan import LivePlan
    from surgesim.loadtests.runner import _kill_group

    plan = LivePlan(scenario_path, time_scale=time_scale, rate_scale=rate_scale, only=sources)
    duration = plan.duration_s if duration_s is None else min(float(duration_s), plan.duration_s)
    # Without --out the worker's own copy is scratch: the master has the results (forwarded),
    # so the temporary directory goes when the worker does.
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="surgesim-worker-"))
    scratch = None if out_dir else out
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **target_env, FORWARD_VAR: "1",
           "SURGESIM_SCENARIO": str(plan.scenario_path), "SURGESIM_DURATION": repr(duration),
           "SURGESIM_OUT_DIR": str(out), "SURGESIM_TIME_SCALE": repr(plan.time_scale),
           "SURGESIM_RATE_SCALE": repr(plan.rate_scale),
           # the prepare phase: the master's prepare.json when the target names one, else run here
           "SURGESIM_PRELOAD": target_env.get("SURGESIM_PRELOAD") or ("0" if target_env.get("SURGESIM_PREPARED") else "1")}
    env.pop("SURGESIM_WORKERS", None)  # the master's --expect-workers says how many share the schedule
    if sources is not None:
        env["SURGESIM_SOURCES"] = ",".join(sources)
    proc = subprocess.Popen(worker_command(master, locustfile), env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT if log is not None else None,
                            start_new_session=True, cwd=str(out))
    try:
        return proc.wait()
    finally:
        _kill_group(proc)  # Ctrl-C, or whatever it spawned: nothing outlives the command
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
