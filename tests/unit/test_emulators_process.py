"""Managed processes: start in a new session, identify, stop the whole group. No emulator needed."""

from __future__ import annotations

import os
import signal
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
