"""Run the Locust scenario headless in a subprocess, bounded in time, for `surgesim live`.

Locust runs in its own process because it monkey-patches the interpreter with gevent
(which the caller's gRPC clients and asyncio code do not survive), and so that a hung run
can be killed as a whole process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from surgesim.loadtests.plan import EMULATOR_VARS, FIRESTORE_ENDPOINT, PROJECT, PUBSUB, LivePlan, url_env_var
from surgesim.loadtests.recorder import LoadResult, merge_results, read_result

LocustResult = LoadResult
"""counts per source, histograms per path (latency/<service>.<route>, response/...,
publish/<topic>, lateness/locust), rows for histograms.parquet; extra: returncode, log,
stats_csv, prepare, run_tag."""

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def worker_dir(out_dir: str | Path, index: int) -> Path:
    """Where Locust worker `index` writes its results under SURGESIM_OUT_DIR (locust_users.py)."""
    return Path(out_dir) / f"worker-{index}"


def host_env(host_map: dict[str, str]) -> dict[str, str]:
    """{service: url, "pubsub": host:port, "project": id} as the locustfile's env vars."""
    env = {}
    for key, value in host_map.items():
        if key == PUBSUB:
            env["PUBSUB_EMULATOR_HOST"] = value.removeprefix("http://")
        elif key == PROJECT:
            env["GOOGLE_CLOUD_PROJECT"] = value
        elif key in EMULATOR_VARS:  # each in its own convention: FIRESTORE host:port, STORAGE a URL
            env[EMULATOR_VARS[key]] = value.removeprefix("http://") if key == FIRESTORE_ENDPOINT else value
        else:
            env[url_env_var(key)] = value
    return env


def run_locust(scenario_path: str | Path | None, host_map: dict[str, str], duration_s: float | None,
               out_dir: str | Path, env: dict[str, str] | None = None, *, time_scale: float | None = None,
               rate_scale: float | None = None, preload: bool = True, locustfile: str | Path | None = None,
               sources: list[str] | None = None, grace_s: float = 60.0,
               on_start: Callable[[subprocess.Popen], None] | None = None, workers: int = 1,
               master: tuple[str, int] | None = None, wait_workers_s: float = 300.0) -> LocustResult:
    """Run the scenario's traffic through Locust, headless, for duration_s wall seconds
    (default: the whole compressed scenario), and return what it sent and measured.

    host_map: {service: base URL, "pubsub": PUBSUB_EMULATOR_HOST, "project": project}.
    env: extra environment for the Locust process (e.g. the emulators' env vars).
    sources: send only these scenario sources (the rest can come from run_fleet).
    Writes out_dir/histograms.parquet, out_dir/loadgen.json, Locust's CSV stats
    (out_dir/locust_stats.csv) and its log (out_dir/locust.log). The process group is
    killed if it outlives duration + grace_s (the prepare phase and the drain included).
    on_start(popen) is called as soon as Locust is started, so a caller in another thread
    can kill its process group (_kill_group) on Ctrl-C or an error: the group is in its own
    session and sees no terminal signal.

    workers > 1: Locust's distributed mode on this machine (`--processes N`: a master and N
    forked workers, all in that one process group); each worker sends its share of the one
    schedule and writes out_dir/worker-<k>/, merged here (recorder.merge_results).

    master=(bind host, port): a Locust master for `workers` workers started elsewhere
    (`surgesim worker`, loadtests/distributed.py), waiting up to wait_workers_s for them;
    they send their results here over Locust's connection, into the same worker-<k>/."""
    if workers < 1:
        raise ValueError(f"workers: {workers}; want 1 or more")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = LivePlan(scenario_path, time_scale=time_scale, rate_scale=rate_scale, only=sources)
    duration = plan.duration_s if duration_s is None else min(float(duration_s), plan.duration_s)
    child_env = {**os.environ, **(env or {}), **host_env(host_map),
                 "SURGESIM_SCENARIO": str(plan.scenario_path), "SURGESIM_DURATION": repr(duration),
                 "SURGESIM_OUT_DIR": str(out), "SURGESIM_PRELOAD": "1" if preload else "0",
                 "SURGESIM_TIME_SCALE": repr(plan.time_scale), "SURGESIM_RATE_SCALE": repr(plan.rate_scale)}
    if sources is not None:
        child_env["SURGESIM_SOURCES"] = ",".join(sources)
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile or LOCUSTFILE), "--headless", "--only-summary",
           "--csv", str(out / "locust"), "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    if master is not None:
        child_env["SURGESIM_WORKERS"] = str(workers)
        child_env["SURGESIM_REMOTE_WORKERS"] = "1"  # their results come over the wire (distributed.py)
        cmd += ["--master", "--expect-workers", str(workers), "--expect-workers-max-wait", str(int(wait_workers_s)),
                "--master-bind-host", master[0], "--master-bind-port", str(master[1])]
    elif workers > 1:
        from surgesim.ports import free_port

        child_env["SURGESIM_WORKERS"] = str(workers)
        port = str(free_port())  # the forked workers connect to --master-host/--master-port
        cmd += ["--processes", str(workers), "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                "--master-host", "127.0.0.1", "--master-port", port]
    worker_dirs = [worker_dir(out, k) for k in range(workers)] if workers > 1 or master is not None else []
    for d in worker_dirs:
        (d / "loadgen.json").unlink(missing_ok=True)
    log_path = out / "locust.log"
    (out / "loadgen.json").unlink(missing_ok=True)
    started = time.time()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=child_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(out))
        try:
            if on_start is not None:
                on_start(proc)
            rc = proc.wait(timeout=duration + grace_s + (wait_workers_s if master is not None else 0.0))
            killed = False
        except subprocess.TimeoutExpired:
            killed = True
            _kill_group(proc)
            rc = proc.returncode
        finally:
            _kill_group(proc)  # nothing it spawned may outlive it
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    if worker_dirs:
        missing = [d.name for d in worker_dirs if not (d / "loadgen.json").exists()]
        if missing:
            raise RuntimeError(f"Locust workers {', '.join(missing)} wrote no results (exit {rc}"
                               f"{', killed after timeout' if killed else ''}):\n" + log_text[-3000:])
        merge_results([read_result(d) for d in worker_dirs]).write(out)
    if not (out / "loadgen.json").exists():
        raise RuntimeError(f"Locust wrote no results (exit {rc}{', killed after timeout' if killed else ''}):\n"
                           + log_text[-3000:])
    result = read_result(out)
    result.extra.update({"returncode": rc, "killed": killed, "wall_s": round(time.time() - started, 3),
                         "stats_csv": str(out / "locust_stats.csv"), "log": str(log_path)})
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    """TERM, then KILL, the child's whole process group (start_new_session: pgid = pid)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + 5.0
        while time.time() < deadline:
            proc.poll()  # reap the leader, or the group never empties
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
