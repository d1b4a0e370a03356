"""Run a service as its own process on a free port, as the live harness and the
integration tests do: `python -m surgesim.services module:app` with PORT set, in its own
process group so stopping it leaves nothing behind.

    with run_service("surgesim.services.fakes.gateway:sms_app") as svc:
        httpx.get(svc.url + "/admin/stats")
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httpx

from surgesim.ports import free_port  # noqa: F401  (re-exported: callers import it from here)


@dataclass
class ServiceProcess:
    target: str
    port: int
    proc: subprocess.Popen
    log_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, timeout: float = 5.0) -> int | None:
        return stop_group(self.proc, timeout)


def stop_group(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """Stop a child started with start_new_session=True and everything in its process
    group: SIGTERM, then SIGKILL after `timeout` seconds. Returns its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    return proc.returncode


def _answering_pid(r: httpx.Response) -> int | None:
    """The pid a surgesim service reports on /healthz (None for anything else)."""
    try:
        body = r.json()
    except ValueError:
        return None
    pid = body.get("pid") if isinstance(body, dict) else None
    return pid if isinstance(pid, int) else None


def start_service(target: str, env: Mapping[str, str] | None = None, port: int | None = None,
                  ready_path: str = "/healthz", timeout: float = 30.0, log_dir: str | None = None) -> ServiceProcess:
    port = port or free_port()
    full_env = {**os.environ, **(env or {}), "PORT": str(port)}
    # Without a log_dir: $SURGESIM_SERVICE_LOG_DIR if set (the test suite points it at pytest's
    # own temp tree, which pytest prunes), else the system temp dir.
    log_dir = log_dir or os.environ.get("SURGESIM_SERVICE_LOG_DIR") or None
    fd, log_path = tempfile.mkstemp(prefix=target.rsplit(":", 1)[-1] + "-", suffix=".log", dir=log_dir)
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "surgesim.services", target], env=full_env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    svc = ServiceProcess(target, port, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{target} exited with {proc.returncode} before answering:\n{svc.log()[-3000:]}")
        try:
            r = httpx.get(svc.url + ready_path, timeout=1.0, trust_env=False)
        except httpx.HTTPError:
            time.sleep(0.1)
            continue
        if r.status_code < 500:
            other = _answering_pid(r)
            if other is not None and other != proc.pid:
                # Our process cannot bind the port: something else already answers there.
                svc.stop()
                raise RuntimeError(f"{target}: port {port} is already served by another process (pid {other}); "
                                   f"pick another port\n{svc.log()[-3000:]}")
            return svc
        time.sleep(0.1)
    svc.stop()
    raise RuntimeError(f"{target} did not answer {ready_path} on port {port} within {timeout:g}s:\n{svc.log()[-3000:]}")


@contextlib.contextmanager
def run_service(target: str, env: Mapping[str, str] | None = None, **kwargs) -> Iterator[ServiceProcess]:
    svc = start_service(target, env, **kwargs)
    try:
        yield svc
    finally:
        svc.stop()
