"""A generic managed process: start in its own session, find it again, stop its group.

Emulators are launched through wrapper programs (``gcloud`` spawns ``java``), so a
process is identified by its *process group*: we start it with
``start_new_session=True`` (pgid == pid of the leader) and stop it by signalling the
whole group, SIGTERM first and SIGKILL after a timeout.

A PID alone is not an identity (PIDs are reused), so a process counts as ours only if

* it is the recorded leader and its start time matches the record, or
* it is in the recorded process group *and* carries our environment markers
  (``SURGESIM_EMULATOR`` / ``SURGESIM_STATE_DIR``, inherited by every descendant).

Nothing in this module signals a process that fails both tests.

The start time compared is the kernel's (``/proc/PID/stat`` field 22, clock ticks since
boot), not psutil's ``create_time()``: that one is boot time + ticks, and the boot time the
kernel reports moves whenever the wall clock is stepped (NTP, a VM resumed from a snapshot).
On CI a step of that kind made every running emulator look dead ("not running;
restarting") and the suite fell apart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from surgesim.ports import free_port  # noqa: F401  (re-exported: callers import it from here)

#: Environment variables set in every process we start (and inherited by its children).
MARKER_NAME = "SURGESIM_EMULATOR"
MARKER_STATE_DIR = "SURGESIM_STATE_DIR"

# Popen objects of the processes this interpreter started, so that we can reap them
# (otherwise a stopped child lingers as a zombie until this interpreter exits).
_children: dict[int, subprocess.Popen] = {}
_exit_codes: dict[int, int] = {}


@dataclass
class ManagedProcess:
    """What we know about a process we started: enough to find it and stop it later."""

    name: str
    pid: int
    pgid: int
    create_time: float
    command: list[str]
    log_path: str
    started_at: float  # wall-clock epoch seconds
    ports: dict[str, int] = field(default_factory=dict)
    state_dir: str = ""
    start_ticks: int | None = None  # kernel start time; None where /proc is absent

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "ManagedProcess":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def start_process(
    name: str,
    command: Sequence[str],
    log_path: str | os.PathLike,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    state_dir: str | os.PathLike = "",
    ports: Mapping[str, int] | None = None,
) -> ManagedProcess:
    """Start ``command`` in a new session, stdout+stderr to ``log_path``.

    An existing log is kept as ``<log_path>.prev`` (e.g. the log of a crashed emulator
    that is being restarted).
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if log_path.exists() and log_path.stat().st_size:
        os.replace(log_path, log_path.with_name(log_path.name + ".prev"))
    child_env = dict(os.environ if env is None else env)
    child_env[MARKER_NAME] = name
    child_env[MARKER_STATE_DIR] = str(state_dir)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:  # died instantly; keep a record anyway so the caller sees it
        create_time = 0.0
    ticks = start_ticks(proc.pid)
    return ManagedProcess(
        name=name,
        pid=proc.pid,
        pgid=proc.pid,  # start_new_session: the child leads its own group
        create_time=create_time,
        command=list(command),
        log_path=str(log_path),
        started_at=time.time(),
        ports=dict(ports or {}),
        state_dir=str(state_dir),
        start_ticks=ticks,
    )


def start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` in clock ticks since boot: fixed for the life of
    the process and unaffected by wall-clock steps. None if unknown (no /proc, or gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])  # field 22 overall; fields[0] here is field 3
    except (IndexError, ValueError):
        return None


def _is_recorded(p: psutil.Process, create_time: float | None, ticks: int | None) -> bool:
    """Is ``p`` the very process that was recorded (not a later one reusing its PID)?"""
    if ticks is not None:
        now = start_ticks(p.pid)
        if now is not None:
            return now == ticks
    if create_time is None:
        return True
    # Records without ticks (older state files, no /proc): wall-clock based, so tolerant.
    return abs(p.create_time() - create_time) <= 1.0


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        _exit_codes[pid] = proc.returncode
        _children.pop(pid, None)


def exit_code(pid: int) -> int | None:
    """Exit status of a process this interpreter started and that has ended (else None)."""
    _reap(pid)
    return _exit_codes.get(pid)


def is_running(pid: int, create_time: float | None = None, ticks: int | None = None) -> bool:
    """True if ``pid`` is alive (not a zombie) and, if given, is the process recorded with
    that start time (``ticks`` from :func:`start_ticks`, else ``create_time``)."""
    _reap(pid)
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return _is_recorded(p, create_time, ticks)  # else the PID was reused by someone else
    except psutil.Error:
        return False


def _carries_marker(p: psutil.Process, name: str, state_dir: str) -> bool:
    try:
        env = p.environ()
    except psutil.Error:
        return False
    return env.get(MARKER_NAME) == name and env.get(MARKER_STATE_DIR) == state_dir


def group_members(record: ManagedProcess) -> list[psutil.Process]:
    """Live processes of ``record``'s group that are provably ours (see module doc)."""
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) != record.pgid:
                continue
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            is_leader = p.pid == record.pid and _is_recorded(p, record.create_time, record.start_ticks)
            if is_leader or _carries_marker(p, record.name, record.state_dir):
                members.append(p)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return members


def marked_processes(state_dir: str | os.PathLike, name: str | None = None) -> list[psutil.Process]:
    """Every live process carrying our markers for ``state_dir`` (any group, any name)."""
    state_dir = str(state_dir)
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                continue
            env = p.environ()
        except psutil.Error:
            continue
        if env.get(MARKER_STATE_DIR) == state_dir and (name is None or env.get(MARKER_NAME) == name):
            found.append(p)
    return found


@dataclass
class StopResult:
    name: str
    pid: int
    was_running: bool
    signal: str  # "SIGTERM", "SIGKILL" or "" if nothing was running
    seconds: float


def _signal_members(members: Iterable[psutil.Process], sig: int) -> None:
    for p in members:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def stop_group(record: ManagedProcess, timeout: float = 10.0) -> StopResult:
    """SIGTERM the provably-ours members of ``record``'s group; SIGKILL survivors after ``timeout``."""
    return stop_groups([record], timeout)[0]


def stop_groups(records: Sequence[ManagedProcess], timeout: float = 10.0) -> list[StopResult]:
    """Stop several groups at once (signals all first, then waits): faster than one by one."""
    t0 = time.monotonic()
    members = {id(r): group_members(r) for r in records}
    for r in records:
        if members[id(r)]:
            # Signal the group as a whole (reaches children forked after our scan), but
            # only after proving above that the group is ours.
            try:
                os.killpg(r.pgid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                _signal_members(members[id(r)], signal.SIGTERM)
    used = {id(r): ("SIGTERM" if members[id(r)] else "") for r in records}
    deadline = time.monotonic() + timeout
    pending = [r for r in records if members[id(r)]]
    while pending and time.monotonic() < deadline:
        for r in pending:
            _reap(r.pid)
        pending = [r for r in pending if group_members(r)]
        if pending:
            time.sleep(0.05)
    for r in pending:
        survivors = group_members(r)
        if survivors:
            used[id(r)] = "SIGKILL"
            _signal_members(survivors, signal.SIGKILL)
            psutil.wait_procs(survivors, timeout=5)
    for r in records:
        proc = _children.pop(r.pid, None)
        if proc is not None:
            try:
                _exit_codes[r.pid] = proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
    # Every process signalled is gone before this returns (a member can outlive its group's
    # last scan by a few ms under load; callers then check for leftovers).
    psutil.wait_procs([p for ms in members.values() for p in ms], timeout=3)
    # A process that just exited can hold its listening socket for a few more ms.
    ports = [p for r in records if members[id(r)] for p in r.ports.values()]
    wait_for(lambda: not any(port_open("127.0.0.1", p, 0.1) for p in ports), 3.0, 0.02)
    elapsed = time.monotonic() - t0
    return [
        StopResult(r.name, r.pid, bool(members[id(r)]), used[id(r)], elapsed) for r in records
    ]


def port_open(host: str, port: int, timeout: float = 0.25) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listener_pids(port: int) -> list[int]:
    """PIDs with a LISTEN socket on ``port`` (best effort; may need privileges)."""
    pids = set()
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                pids.add(c.pid)
    except (psutil.Error, PermissionError):
        pass
    return sorted(pids)


def describe_pid(pid: int) -> str:
    try:
        p = psutil.Process(pid)
        return f"pid {pid}: {' '.join(p.cmdline())[:160]}"
    except psutil.Error:
        return f"pid {pid}"


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_tail(path: str | os.PathLike, lines: int = 25, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a log file ('' if missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
