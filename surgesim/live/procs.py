"""Service processes of a live run: an ASGI app (`app:`) through
`surgesim.services.common.devserver`, or a user's own `command:`, each in its own process
group on a port chosen here, with a log file per process. Starting many at once is done
in parallel: each costs a second or two of CPU to import its libraries."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from surgesim.services.common.devserver import free_port, start_service


@dataclass
class Proc:
    """One running (or stopped) service process."""

    name: str
    target: str | list[str]
    """`module:app` or a command line."""
    env: dict[str, str]
    port: int
    log_dir: Path
    proc: subprocess.Popen | None = None
    log_path: str | None = None
    restarts: int = 0
    ready_path: str | None = "/healthz"
    """`app:` services answer /healthz; a `command:` is ready when this path answers 2xx,
    or, when None, when its port accepts a TCP connection."""
    cwd: Path | None = None
    """Where a `command:` runs (the system file's folder)."""
    history: list[dict] = field(default_factory=list)
    kind: str = "service"
    """service, worker (a pull worker) or fake: how the run's `processes` report names it."""
    stopping: bool = False
    """True from stop() until the next start(): an exit now is not unexpected (watchdog)."""
    stopped_by_fault: bool = False
    """Stopped by a fault (consumer_down), so not running at the end is expected."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> "Proc":
        self.stopping = False
        if isinstance(self.target, str):
            svc = start_service(self.target, self.env, port=self.port, ready_path=self.ready_path, timeout=timeout,
                                log_dir=str(self.log_dir))
            self.proc, self.log_path = svc.proc, svc.log_path
        else:
            self._start_command(timeout)
        self.history.append({"event": "started", "pid": self.proc.pid, "at": time.time()})
        return self

    def _start_command(self, timeout: float) -> None:
        self.log_path = str(self.log_dir / f"{self.name}-{self.restarts}.log")
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(self.target, env={**os.environ, **self.env, "PORT": str(self.port)},
                                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True, cwd=self.cwd)
            except OSError as exc:
                raise RuntimeError(f"{self.name}: cannot run `{' '.join(self.target)}`"
                                   f"{f' in {self.cwd}' if self.cwd else ''}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: `{' '.join(self.target)}` exited with {self.proc.returncode} "
                                   f"before listening on $PORT={self.port}:\n{self.log()[-3000:]}")
            ok, last = self._ready()
            if ok:
                return
            time.sleep(0.1)
        self.stop()
        what = f"answer 2xx on {self.ready_path} (last: {last})" if self.ready_path else "listen"
        raise RuntimeError(f"{self.name} did not {what} on port {self.port} within {timeout:g}s:\n{self.log()[-3000:]}")

    def _ready(self) -> tuple[bool, str]:
        """(ready, what was seen): a TCP connect, or a 2xx on ready_path."""
        if self.ready_path is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return True, "connected"
            except OSError as exc:
                return False, str(exc)
        try:
            r = httpx.get(self.url + self.ready_path, timeout=1.0, trust_env=False)
        except httpx.HTTPError as exc:
            return False, type(exc).__name__
        return 200 <= r.status_code < 300, f"HTTP {r.status_code}"

    def log(self) -> str:
        if not self.log_path:
            return ""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM to the process group, SIGKILL after `timeout` (at once if a second Ctrl-C
        hurries the stop); the whole group goes."""
        from . import interrupts

        self.stopping = True
        p = self.proc
        if p is None:
            return None
        timeout = interrupts.stop_timeout(timeout)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
            try:
                p.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        # children that ignored TERM (the group outlives its leader)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        self.history.append({"event": "stopped", "pid": p.pid, "at": time.time(), "returncode": p.returncode})
        return p.returncode

    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def tail(self, lines: int = 20) -> list[str]:
        """The last lines of this process's log."""
        from surgesim.emulators.process import log_tail

        return log_tail(self.log_path, lines).splitlines() if self.log_path else []

    def group_alive(self) -> bool:
        """Any process left in this process's group (its leader or children it forked)."""
        if self.proc is None:
            return False
        if self.proc.poll() is None:
            return True
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def restart(self, env: Mapping[str, str] | None = None, new_port: bool = True, timeout: float = 60.0) -> "Proc":
        """Stop, then start again (with a changed environment); a fresh port by default so a
        lingering socket of the old process can never answer for the new one."""
        self.stop()
        if env is not None:
            self.env = dict(env)
        if new_port:
            self.port = free_port()
        self.restarts += 1
        return self.start(timeout)


def start_all(procs: list[Proc], timeout: float = 90.0, workers: int = 8) -> None:
    """Start every process in parallel; on any failure stop the ones that did start."""
    if not procs:
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(procs))) as pool:
        futures = [pool.submit(p.start, timeout) for p in procs]
        errors = []
        for p, f in zip(procs, futures):
            try:
                f.result()
            except Exception as exc:  # noqa: BLE001 -- reported together below
                errors.append(f"{p.name}: {exc}")
    if errors:
        for p in procs:
            p.stop()
        raise RuntimeError("services failed to start:\n" + "\n".join(errors))
