"""The whole set of emulators: ``up`` (idempotent), ``down`` (only what we started), ``status``.

Other modules should use this module's functions (or ``surgesim.emulators``, which
re-exports them)::

    stack = up(only="pubsub,firestore", project="demo", state_dir=tmp)
    os.environ.update(stack.env_vars())       # PUBSUB_EMULATOR_HOST=127.0.0.1:8085, ...
    publisher = stack.clients.publisher()     # official clients pointed at the emulators
    down(state_dir=tmp)
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .base import HOST, Emulator
from .bigquery import BigQueryEmulator
from .errors import EmulatorError, MissingToolError, PortConflictError, StartupError
from .firestore import FirestoreEmulator
from .process import (
    ManagedProcess,
    StopResult,
    describe_pid,
    exit_code,
    is_running,
    listener_pids,
    log_tail,
    marked_processes,
    port_open,
    start_process,
    stop_groups,
    wait_for,
)
from .postgres import PostgresEmulator
from .pubsub import PubSubEmulator
from .state import State, load_state, locked, resolve_state_dir, save_state
from .storage import StorageEmulator

DEFAULT_PROJECT = "surgesim-local"
GOOGLE_CLOUD_PROJECT = "GOOGLE_CLOUD_PROJECT"
#: Seconds a recorded, alive but unhealthy emulator gets before `up` restarts it.
UNHEALTHY_GRACE = 5.0


def default_emulators() -> dict[str, Emulator]:
    """The emulators, in start order (PostgreSQL is optional: ``up`` starts it when named)."""
    return {e.name: e for e in (PubSubEmulator(), FirestoreEmulator(), BigQueryEmulator(), StorageEmulator(),
                                PostgresEmulator())}


NAMES: tuple[str, ...] = tuple(default_emulators())


def parse_only(only: str | Iterable[str] | None, registry: Mapping[str, Emulator],
               *, optional: bool = True) -> list[str]:
    """``"pubsub,firestore"`` or an iterable -> validated names in registry order (None = all,
    or all but the optional ones with ``optional=False``: what ``up`` starts unasked)."""
    if only is None:
        return [n for n in registry if optional or not registry[n].optional]
    names = [n.strip() for n in only.split(",")] if isinstance(only, str) else [str(n).strip() for n in only]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown emulator(s) {', '.join(unknown)}; choose from {', '.join(registry)}")
    return [n for n in registry if n in names]


@dataclass
class EmulatorStatus:
    """One emulator as seen by ``status``/``up``.

    ``status`` is one of: ``running`` (ours, alive, healthy), ``unhealthy`` (ours, alive,
    not answering), ``dead`` (ours per the state file, process gone), ``external``
    (answering, not started by surgesim: never stopped by us), ``stopped``.
    """

    name: str
    status: str
    owned: bool
    healthy: bool
    ports: dict[str, int]
    host: str = HOST
    pid: int | None = None
    pgid: int | None = None
    log_path: str | None = None
    started_at: float | None = None
    action: str | None = None  # set by up(): started | restarted | reused | external
    startup_seconds: float | None = None

    @property
    def present(self) -> bool:
        return self.status in ("running", "unhealthy", "external")

    def line(self) -> str:
        who = "ours" if self.owned else ("not ours" if self.status == "external" else "-")
        ports = ",".join(f"{self.host}:{p}" for p in self.ports.values())
        parts = [f"{self.name:<10}", f"{self.status:<9}", f"{who:<8}", "healthy" if self.healthy else "-      "]
        if self.pid:
            parts.append(f"pid {self.pid}")
        parts.append(ports)
        if self.log_path:
            parts.append(f"log {self.log_path}")
        return "  ".join(parts)


@dataclass
class DownResult:
    stopped: list[StopResult] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    ports_still_open: list[int] = field(default_factory=list)


class Stack:
    """A snapshot of the emulators recorded in a state directory, with handy accessors."""

    def __init__(
        self,
        state_dir: Path,
        project: str,
        emulators: Mapping[str, EmulatorStatus],
        registry: Mapping[str, Emulator],
        messages: Iterable[str] = (),
        host: str = HOST,
    ) -> None:
        self.state_dir = state_dir
        self.project = project
        self.host = host
        self.emulators: dict[str, EmulatorStatus] = dict(emulators)
        self.registry = dict(registry)
        self.messages: list[str] = list(messages)
        self.fidelity = None  # a probe.FidelityReport after up(probe=True)

    def __repr__(self) -> str:
        items = ", ".join(f"{n}={s.status}" for n, s in self.emulators.items())
        return f"Stack({str(self.state_dir)!r}, project={self.project!r}, {items})"

    def __getitem__(self, name: str) -> EmulatorStatus:
        return self.emulators[name]

    def ports(self, name: str) -> dict[str, int]:
        return dict(self.emulators[name].ports)

    def endpoint(self, name: str) -> str:
        """``host:port`` of an emulator's main port."""
        spec = self.registry[name]
        return f"{self.host}:{spec.main_port(self.emulators[name].ports)}"

    def env_vars(self) -> dict[str, str]:
        """Variables pointing official clients (and your services) at the emulators here."""
        env: dict[str, str] = {}
        for name, st in self.emulators.items():
            if st.present or st.status == "dead":
                env.update(self.registry[name].env_vars(st.host, st.ports))
        if env:
            env[GOOGLE_CLOUD_PROJECT] = self.project
        return env

    def export_lines(self) -> list[str]:
        import shlex

        return [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.env_vars().items())]

    @functools.cached_property
    def clients(self):
        """Factory of official clients (``.publisher()``, ``.firestore()``, ...)."""
        from .clients import Clients

        return Clients(self.env_vars(), project=self.project)

    def owned_pids(self) -> list[int]:
        return [s.pid for s in self.emulators.values() if s.owned and s.pid]

    def refresh(self) -> "Stack":
        return status(list(self.emulators), state_dir=self.state_dir, registry=self.registry)

    def down(self, only: str | Iterable[str] | None = None, timeout: float = 10.0) -> DownResult:
        return down(only, state_dir=self.state_dir, timeout=timeout, registry=self.registry)


def _status_of(name: str, spec: Emulator, state: State, project: str, check: bool) -> EmulatorStatus:
    rec = state.started.get(name)
    if rec is not None:
        alive = is_running(rec.pid, rec.create_time, rec.start_ticks)
        healthy = alive and check and spec.healthy(HOST, rec.ports, project)
        st = "dead" if not alive else ("running" if healthy or not check else "unhealthy")
        return EmulatorStatus(
            name, st, True, healthy, dict(rec.ports), HOST, rec.pid, rec.pgid, rec.log_path, rec.started_at
        )
    ext = state.external.get(name)
    if ext is not None:
        ports = {k: int(v) for k, v in ext["ports"].items()}
        healthy = check and spec.healthy(HOST, ports, project)
        return EmulatorStatus(name, "external", False, healthy, ports)
    return EmulatorStatus(name, "stopped", False, False, dict(spec.default_ports))


def status(
    only: str | Iterable[str] | None = None,
    *,
    state_dir: str | os.PathLike | None = None,
    registry: Mapping[str, Emulator] | None = None,
    check: bool = True,
) -> Stack:
    """Each emulator's state: running/unhealthy/dead/external/stopped, ours or not, healthy."""
    registry = registry or default_emulators()
    d = resolve_state_dir(state_dir)
    state = load_state(d)
    project = state.project or DEFAULT_PROJECT
    names = parse_only(only, registry)
    return Stack(d, project, {n: _status_of(n, registry[n], state, project, check) for n in names}, registry)


def env_vars(state_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """The env vars for whatever the state directory records (no health checks)."""
    return status(state_dir=state_dir, check=False).env_vars()


def _requested_ports(spec: Emulator, ports: Mapping[str, int] | None, recorded: Mapping[str, int] | None) -> dict[str, int]:
    out = dict(spec.default_ports)
    if recorded:
        out.update({k: int(v) for k, v in recorded.items() if k in spec.port_keys})
    if ports:
        out.update({k: int(v) for k, v in ports.items() if k in spec.port_keys and v})
    return out


def _port_owner(port: int) -> str:
    pids = listener_pids(port)
    return "; ".join(describe_pid(p) for p in pids) if pids else "another program"


def up(
    only: str | Iterable[str] | None = None,
    *,
    ports: Mapping[str, int] | None = None,
    project: str | None = None,
    state_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
    probe: bool = False,
    registry: Mapping[str, Emulator] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> Stack:
    """Start (or reuse) the emulators and wait until each answers a real request.

    ``ports`` is a flat mapping: ``pubsub``, ``firestore``, ``bigquery`` (REST),
    ``bigquery_grpc``, ``storage``. An emulator recorded in the state file that is alive
    and healthy is reused; a recorded one whose process is gone is restarted (on the same
    ports); a healthy emulator on the port that we did not start is reused and recorded
    as *external*, so ``down`` never stops it. Raises MissingToolError, PortConflictError
    or StartupError (with the log tail); emulators that did start stay recorded.
    """
    registry = registry or default_emulators()
    names = parse_only(only, registry, optional=False)
    messages: list[str] = []

    def say(msg: str) -> None:
        messages.append(msg)
        if on_message:
            on_message(msg)

    with locked(state_dir) as d:
        state = load_state(d)
        project = project or state.project or DEFAULT_PROJECT
        state.project, state.host = project, HOST
        results: dict[str, EmulatorStatus] = {}
        to_start: list[tuple[str, dict[str, int], str]] = []

        # 1. decide, for each emulator: reuse ours, reuse someone else's, or (re)start.
        for name in names:
            spec = registry[name]
            rec = state.started.get(name)
            want = _requested_ports(spec, ports, rec.ports if rec else None)
            action = "started"
            if rec is not None:
                alive = is_running(rec.pid, rec.create_time, rec.start_ticks)
                # a port key the record lacks is one this version added (e.g. firestore_events):
                # the older emulator is reused without it
                if alive and {k: v for k, v in want.items() if k in rec.ports} != rec.ports:
                    raise PortConflictError(
                        f"{spec.title} is already running on {rec.ports} (pid {rec.pid}, started by "
                        f"surgesim), not on the requested {want}. Run `emulators down --only {name}` "
                        "first, or do not pass its port."
                    )
                if alive and (
                    spec.healthy(HOST, rec.ports, project)
                    or wait_for(lambda: spec.healthy(HOST, rec.ports, project), min(UNHEALTHY_GRACE, spec.startup_timeout), 0.2)
                ):
                    say(f"{name} emulator already running (pid {rec.pid}) on {HOST}:{spec.main_port(rec.ports)}; reusing it")
                    st = _status_of(name, spec, state, project, check=False)
                    st.healthy, st.action = True, "reused"
                    results[name] = st
                    continue
                if alive:
                    say(f"{name} emulator (pid {rec.pid}) is running but not healthy on {HOST}:{spec.main_port(rec.ports)}; restarting")
                else:
                    say(f"{name} emulator (pid {rec.pid}) is not running; restarting")
                # also stops what is left of its group (e.g. java after its gcloud parent died)
                stop_groups([rec], timeout=10.0)
                del state.started[name]
                save_state(state, d)
                action = "restarted"

            main = spec.main_port(want)
            if port_open(HOST, main):
                if spec.healthy(HOST, want, project):
                    say(
                        f"a {name} emulator not started by surgesim already answers on {HOST}:{main}; "
                        "reusing it (down will leave it running)"
                    )
                    # where ours would send events is not known for someone else's
                    seen = {k: v for k, v in want.items() if k not in spec.sends_to}
                    state.external[name] = {"ports": seen, "seen_at": time.time()}
                    results[name] = EmulatorStatus(name, "external", False, True, seen, action="external")
                    continue
                raise PortConflictError(
                    f"port {main} on {HOST} is in use by {_port_owner(main)}, which does not answer as "
                    f"a {spec.title}. Stop it or choose another port (--{name.replace('_', '-')}-port)."
                )
            for key in spec.port_keys[1:]:
                if port_open(HOST, want[key]):
                    raise PortConflictError(
                        f"port {want[key]} ({key}) on {HOST} is in use by {_port_owner(want[key])}. "
                        f"Stop it or choose another port (--{key.replace('_', '-')}-port)."
                    )
            state.external.pop(name, None)
            to_start.append((name, want, action))

        # 2. every missing tool at once, before starting anything.
        missing = []
        for name, _, _ in to_start:
            try:
                registry[name].on_message = say  # a first start may install the tool's own environment
                registry[name].check_installed()
            except MissingToolError as exc:
                missing.append(str(exc))
        if missing:
            save_state(state, d)
            raise MissingToolError("\n\n".join(dict.fromkeys(missing)))

        # 3. launch them all, then wait for all in parallel.
        launched: dict[str, tuple[ManagedProcess, float, str]] = {}
        try:
            for name, want, action in to_start:
                spec = registry[name]
                env = dict(os.environ)
                data_dir = d / "data" / name
                spec.prepare(env, data_dir)
                cmd = spec.command(HOST, want, project, data_dir)
                t0 = time.monotonic()
                rec = start_process(name, cmd, d / "logs" / f"{name}.log", env=env, state_dir=d, ports=want)
                state.started[name] = rec
                launched[name] = (rec, t0, action)
                save_state(state, d)
        finally:
            save_state(state, d)

        failures: dict[str, str] = {}
        pending = dict(launched)
        while pending:
            now = time.monotonic()
            for name, (rec, t0, action) in list(pending.items()):
                spec = registry[name]
                limit = timeout if timeout is not None else spec.startup_timeout
                if spec.healthy(HOST, rec.ports, project):
                    secs = time.monotonic() - t0
                    verb = "restarted" if action == "restarted" else "started"
                    say(f"{verb} {name} emulator (pid {rec.pid}) on {HOST}:{spec.main_port(rec.ports)} in {secs:.1f} s")
                    st = _status_of(name, spec, state, project, check=False)
                    st.healthy, st.action, st.startup_seconds = True, action, secs
                    results[name] = st
                    del pending[name]
                elif not is_running(rec.pid, rec.create_time, rec.start_ticks):
                    code = exit_code(rec.pid)
                    failures[name] = f"{spec.title} exited (code {code}) before answering on {HOST}:{spec.main_port(rec.ports)}"
                    del pending[name]
                elif now - t0 > limit:
                    failures[name] = f"{spec.title} did not answer on {HOST}:{spec.main_port(rec.ports)} within {limit:.0f} s"
                    del pending[name]
            if pending:
                time.sleep(0.1)

        if failures:
            recs = [launched[n][0] for n in failures]
            stop_groups(recs, timeout=10.0)
            parts = []
            for name, why in failures.items():
                rec = launched[name][0]
                del state.started[name]
                tail = log_tail(rec.log_path)
                parts.append(f"{why}.\nCommand: {' '.join(rec.command)}\nLast lines of {rec.log_path}:\n{tail or '(empty)'}")
            save_state(state, d)
            ok = [n for n in results if results[n].owned]
            if ok:
                parts.append(f"(still running and recorded: {', '.join(ok)}; `emulators down` stops them)")
            raise StartupError("\n\n".join(parts))
        save_state(state, d)

    stack = Stack(d, project, {n: results[n] for n in names}, registry, messages)
    if probe and "pubsub" in stack.emulators and stack.emulators["pubsub"].healthy:
        from .probe import probe_pubsub

        try:
            stack.fidelity = probe_pubsub(stack.endpoint("pubsub"), project, state_dir=d)
            say(stack.fidelity.summary())
        except Exception as exc:  # noqa: BLE001 -- the probe informs; it must not fail `up`
            say(f"Pub/Sub fidelity probe failed: {type(exc).__name__}: {exc}")
    return stack


def down(
    only: str | Iterable[str] | None = None,
    *,
    state_dir: str | os.PathLike | None = None,
    timeout: float = 10.0,
    registry: Mapping[str, Emulator] | None = None,
) -> DownResult:
    """Stop exactly the emulators the state file says we started (their whole process
    groups, SIGTERM then SIGKILL after ``timeout``), check their ports are free, and clear
    them (and any *external* entries) from the state. Never touches anything else."""
    registry = registry or default_emulators()
    names = parse_only(only, registry)
    result = DownResult()
    with locked(state_dir) as d:
        state = load_state(d)
        recs = [state.started[n] for n in names if n in state.started]
        result.stopped = stop_groups(recs, timeout=timeout)
        for rec, res in zip(recs, result.stopped):
            if res.was_running:
                result.messages.append(f"stopped {rec.name} emulator (pid {rec.pid}) with {res.signal} in {res.seconds:.1f} s")
            else:
                result.messages.append(f"{rec.name} emulator (pid {rec.pid}) was not running")
        for rec in recs:
            sends_to = registry[rec.name].sends_to if rec.name in registry else ()
            for key, port in rec.ports.items():
                if key in sends_to:  # served by a harness, not by the emulator
                    continue
                if not wait_for(lambda: not port_open(HOST, port), 5.0, 0.1):
                    result.ports_still_open.append(port)
                    result.messages.append(
                        f"port {port} still answers after stopping {rec.name} ({_port_owner(port)}); "
                        "that process was not started by surgesim and was left alone"
                    )
            if rec.name in registry:
                registry[rec.name].cleanup(d / "data" / rec.name)
            del state.started[rec.name]
        for n in names:
            if n in state.external:
                result.messages.append(f"left the {n} emulator on {state.external[n]['ports']} running (not started by surgesim)")
                del state.external[n]
        if not recs and not result.messages:
            result.messages.append("no emulator started by surgesim is recorded in " + str(d))
        save_state(state, d)
    return result


def stray_processes(state_dir: str | os.PathLike | None = None) -> list:
    """Live processes carrying this state dir's marker that the state file does not list
    as a running leader (e.g. a java child orphaned by a killed gcloud). For checks/tests."""
    d = resolve_state_dir(state_dir)
    state = load_state(d)
    recorded = {r.pgid for r in state.started.values() if is_running(r.pid, r.create_time, r.start_ticks)}
    out = []
    for p in marked_processes(d):
        try:
            if os.getpgid(p.pid) not in recorded:
                out.append(p)
        except (ProcessLookupError, PermissionError):
            continue
    return out


__all__ = [
    "DEFAULT_PROJECT", "NAMES", "DownResult", "EmulatorError", "EmulatorStatus", "Stack",
    "default_emulators", "down", "env_vars", "parse_only", "status", "stray_processes", "up",
]
