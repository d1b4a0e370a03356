"""Every process a live run started, checked about once a second: an unexpected exit is
said on the console at once (name, exit code, last log lines) and kept for the run's
`processes` record; a dead emulator is fatal (`fatal` is set, the session ends the run).

What is watched, by kind:

* service / worker / fake: the runner's Proc objects; an exit is unexpected unless the
  harness itself stopped the process (Proc.stopping: a stop, a restart, a roll-out);
* emulator: every emulator of the run's stack, ours or reused: its recorded leader pid
  (when known) must be alive and its main port must accept connections (two misses in a
  row, so one slow accept is not a death). A frozen emulator (the emulator_restart fault's
  SIGSTOP) still accepts connections in the kernel, so it is not taken for dead;
* bridge: the bridges' asyncio loop thread and its main task, and the fronts' thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from surgesim.emulators.process import exit_code as emulator_exit_code
from surgesim.emulators.process import is_running, log_tail

log = logging.getLogger(__name__)

TAIL_LINES = 20


class Watchdog:
    def __init__(self, runner, *, say=None, interval: float = 1.0) -> None:
        self.runner = runner
        self.say = say or (lambda m: log.warning("%s", m))
        self.interval = interval
        self.exits: dict[str, dict] = {}
        """name -> {kind, exit_code, log_tail, at} of every unexpected exit seen."""
        self.fatal: str | None = None
        """Set when an emulator died: one line saying which, for the session to end the run."""
        self.expected_down: set[str] = set()
        """Emulators a fault took down on purpose (not a death while in here)."""
        self._misses: dict[str, int] = {}
        self._seen_pids: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at = time.monotonic()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "Watchdog":
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="surgesim-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 -- the watchdog must outlive a bad check
                log.warning("watchdog: %s", exc)

    # ---- one round -------------------------------------------------------------------------
    def check(self) -> None:
        r = self.runner
        for p in [*list(r.procs.values()), *list(r.fake_procs.values())]:
            if p.proc is None or p.stopping or (p.name, p.proc.pid) in self._seen_pids:
                continue
            code = p.proc.poll()
            if code is not None:
                self._seen_pids.add((p.name, p.proc.pid))
                self._exited(p.name, p.kind, code, p.tail(TAIL_LINES))
        for name, st in self._emulators().items():
            if name in self.expected_down or f"{name}-emulator" in self.exits:
                continue
            if not self._emulator_alive(name, st):
                code = emulator_exit_code(st.pid) if st.pid else None
                tail = log_tail(st.log_path, TAIL_LINES).splitlines() if st.log_path else []
                self._exited(f"{name}-emulator", "emulator", code, tail)
                if self.fatal is None:
                    self.fatal = (f"the {name} emulator ({r.stack.endpoint(name)}"
                                  f"{f', pid {st.pid}' if st.pid else ''}) stopped during the run"
                                  f"{'' if code is None else f' (exit {code})'}; ending the run")
        for name, alive in self._bridge_threads().items():
            if not alive and name not in self.exits:
                self._exited(name, "bridge", None, [])

    def _emulators(self) -> dict:
        stack = self.runner.stack
        return dict(stack.emulators) if stack is not None else {}

    def _emulator_alive(self, name: str, st) -> bool:
        if st.pid and not is_running(st.pid):
            return False
        up = _accepts(int(self.runner.stack.endpoint(name).rsplit(":", 1)[1]))
        self._misses[name] = 0 if up else self._misses.get(name, 0) + 1
        return self._misses[name] < 2

    def _bridge_threads(self) -> dict[str, bool]:
        r = self.runner
        out = {}
        b = r.bridges
        if b is not None and getattr(b, "_thread", None) is not None and not getattr(r, "_stopping", False):
            main = getattr(b, "_main", None)
            out["bridges"] = b._thread.is_alive() and not (main is not None and main.done())  # noqa: SLF001
        fronts = getattr(r.fronts, "_thread", None)
        if fronts is not None and r.fronts._loop is not None:  # noqa: SLF001
            out["fronts"] = fronts.is_alive()
        return out

    def _exited(self, name: str, kind: str, code: int | None, tail: list[str]) -> None:
        at = time.monotonic() - self.started_at
        self.exits[name] = {"kind": kind, "exit_code": code, "log_tail": tail, "at_wall_s": round(at, 1)}
        lines = [f"!! {kind} {name} exited unexpectedly" + ("" if code is None else f" (exit code {code})")
                 + f", {at:.0f} s after the start"]
        if tail:
            lines.append(f"   last {len(tail)} log lines:")
            lines += [f"   | {line}" for line in tail]
        self.say("\n".join(lines))

    # ---- the record ------------------------------------------------------------------------
    def processes(self) -> dict[str, dict]:
        """The run's `processes`: every process it started or used, as it is now (call
        before the harness stops them)."""
        r = self.runner
        out: dict[str, dict] = {}
        for p in [*r.procs.values(), *r.fake_procs.values()]:
            ex = self.exits.get(p.name)
            running = p.proc is not None and p.proc.poll() is None
            out[p.name] = {"kind": p.kind, "running_at_end": running,
                           "exit_code": None if running else p.exit_code(),
                           "stopped_by_fault": bool(p.stopped_by_fault),
                           "log_tail": ex["log_tail"] if ex else ([] if running else p.tail(TAIL_LINES))}
        for name, st in self._emulators().items():
            key = f"{name}-emulator"
            ex = self.exits.get(key)
            out[key] = {"kind": "emulator", "running_at_end": ex is None and self._emulator_alive(name, st),
                        "exit_code": ex["exit_code"] if ex else None,
                        "stopped_by_fault": name in self.expected_down,
                        "log_tail": ex["log_tail"] if ex else [], "owned": bool(st.owned)}
        for name, alive in self._bridge_threads().items():
            out[name] = {"kind": "bridge", "running_at_end": alive and name not in self.exits, "exit_code": None,
                         "stopped_by_fault": False, "log_tail": []}
        return out


def _accepts(port: int) -> bool:
    """False only when the port refuses connections (nothing listens). A connect that times
    out is a busy emulator with a full accept queue (a heavy run), not a dead one."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return True
