"""Managed processes: start in a new session, identify, stop the whole group. No emulator needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from surgesim.emulators.process import (
    ManagedProcess,
    free_port,
    group_members,
    is_running,
    log_tail,
    marked_processes,
    port_open,
    start_process,
    start_ticks,
    stop_group,
    wait_for,
)

WRAPPER = (
    # like `gcloud` -> `java`: a parent that runs the real server as its child
    "import subprocess, sys; subprocess.run([sys.executable, '-m', 'http.server', '--bind', '127.0.0.1', sys.argv[1]])"
)


def _start_wrapper(tmp_path, name="web"):
    port = free_port()
    rec = start_process(name, [sys.executable, "-c", WRAPPER, str(port)], tmp_path / f"{name}.log",
                        state_dir=tmp_path, ports={"web": port})
    assert wait_for(lambda: port_open("127.0.0.1", port), 10), log_tail(rec.log_path)
    return rec, port


def test_start_records_identity_and_stop_kills_whole_group(tmp_path):
    rec, port = _start_wrapper(tmp_path)
    try:
        assert rec.pgid == rec.pid and os.getpgid(rec.pid) == rec.pid
        assert is_running(rec.pid, rec.create_time)
        members = group_members(rec)
        assert len(members) == 2  # wrapper + http.server child
        assert {p.pid for p in marked_processes(tmp_path)} == {p.pid for p in members}
    finally:
        res = stop_group(rec, timeout=5)
    assert res.was_running and res.signal == "SIGTERM"
    assert not is_running(rec.pid)
    assert all(not is_running(p.pid) for p in members)
    assert wait_for(lambda: not port_open("127.0.0.1", port), 5)
    assert marked_processes(tmp_path) == []


def test_orphaned_child_is_still_found_and_stopped(tmp_path):
    rec, port = _start_wrapper(tmp_path)
    child = [p for p in group_members(rec) if p.pid != rec.pid][0]
    os.kill(rec.pid, signal.SIGKILL)  # the wrapper dies, its child keeps serving
    assert wait_for(lambda: not is_running(rec.pid, rec.create_time), 5)
    assert port_open("127.0.0.1", port)
    assert [p.pid for p in group_members(rec)] == [child.pid]
    res = stop_group(rec, timeout=5)
    assert res.was_running
    assert wait_for(lambda: not port_open("127.0.0.1", port), 5)


def test_sigkill_after_timeout_when_sigterm_is_ignored(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    rec = start_process("stubborn", [sys.executable, "-c", code], tmp_path / "s.log", state_dir=tmp_path)
    assert wait_for(lambda: "ready" in log_tail(rec.log_path), 10)
    res = stop_group(rec, timeout=0.5)
    assert res.signal == "SIGKILL"
    assert not is_running(rec.pid)


def test_never_signals_a_process_that_is_not_provably_ours(tmp_path):
    # A process we did not start through start_process (no markers), recorded with a
    # wrong create_time, as if its PID had been reused.
    import subprocess

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        fake = ManagedProcess(name="web", pid=other.pid, pgid=other.pid,
                              create_time=psutil.Process(other.pid).create_time() - 100,
                              command=[], log_path="", started_at=time.time(), state_dir=str(tmp_path))
        assert not is_running(fake.pid, fake.create_time)
        assert group_members(fake) == []
        res = stop_group(fake, timeout=1)
        assert not res.was_running
        assert other.poll() is None  # untouched
    finally:
        other.kill()
        other.wait()


def test_zombie_counts_as_not_running(tmp_path):
    import subprocess

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    assert wait_for(lambda: psutil.Process(p.pid).status() == psutil.STATUS_ZOMBIE, 5)
    assert not is_running(p.pid)
    p.wait()


def test_log_tail(tmp_path):
    f = tmp_path / "x.log"
    f.write_text("\n".join(f"line {i}" for i in range(100)))
    assert log_tail(f, lines=3) == "line 97\nline 98\nline 99"
    assert log_tail(tmp_path / "missing.log") == ""


@pytest.mark.parametrize("n", [5])
def test_free_port_is_bindable(n):
    for _ in range(n):
        assert not port_open("127.0.0.1", free_port())


def test_previous_log_is_kept_on_restart(tmp_path):
    log = tmp_path / "logs" / "x.log"
    for word in ("first", "second"):
        rec = start_process("x", [sys.executable, "-c", f"print({word!r})"], log, state_dir=tmp_path)
        assert wait_for(lambda: not is_running(rec.pid), 10)
    assert log.read_text().strip() == "second"
    assert (tmp_path / "logs" / "x.log.prev").read_text().strip() == "first"


def test_a_wall_clock_step_does_not_make_a_running_process_look_dead(tmp_path):
    """psutil's create_time() is boot time + ticks, and the boot time moves when the wall
    clock is stepped (CI saw every emulator called "not running" after one). The record's
    kernel start ticks still identify the process."""
    code = "import time; print('ready', flush=True); time.sleep(30)"
    rec = start_process("stepped", [sys.executable, "-c", code], tmp_path / "c.log", state_dir=tmp_path)
    try:
        assert rec.start_ticks is not None and rec.start_ticks == start_ticks(rec.pid)
        stepped = ManagedProcess.from_dict({**rec.to_dict(), "create_time": rec.create_time - 37.0})
        assert is_running(stepped.pid, stepped.create_time, stepped.start_ticks)
        assert [p.pid for p in group_members(stepped)] == [rec.pid]
        # Same PID, other start ticks: a reused PID, not ours.
        reused = ManagedProcess.from_dict({**rec.to_dict(), "start_ticks": rec.start_ticks - 1})
        assert not is_running(reused.pid, reused.create_time, reused.start_ticks)
    finally:
        stop_group(rec, timeout=2)


def test_start_ticks_reads_a_command_name_with_spaces_and_parentheses(tmp_path):
    import shutil

    exe = tmp_path / "odd ) name ("
    shutil.copy(sys.executable, exe)
    proc = subprocess.Popen([str(exe), "-c", "import time; time.sleep(10)"])
    try:
        assert start_ticks(proc.pid) == start_ticks(proc.pid) is not None
        assert abs(start_ticks(proc.pid) / os.sysconf("SC_CLK_TCK")
                   - psutil.Process(proc.pid).create_time() + psutil.boot_time()) < 0.5
    finally:
        proc.kill()
        proc.wait()
    assert start_ticks(proc.pid) is None
