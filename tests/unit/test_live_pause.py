"""emulator_restart live: a process group frozen and thawed (a real `sleep` child standing in
for the emulator), and the fault injector's record of it, without emulators."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from types import SimpleNamespace

import psutil
import pytest

from surgesim.emulators.metrics import Ledger
from surgesim.live import fault_kinds as faults_mod
from surgesim.live.faults import FaultInjector
from surgesim.live.pause import GroupPause
from surgesim.schema import Fault


@pytest.fixture
def group():
    """A two-process group of its own (sh leading, sleep under it), killed afterwards."""
    p = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    deadline = time.monotonic() + 5
    while len(psutil.Process(p.pid).children()) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    yield p
    os.killpg(p.pid, signal.SIGCONT)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def _states(pgid: int) -> set[str]:
    out = set()
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                out.add(p.status())
        except (psutil.Error, OSError):
            pass
    return out


def _wait_states(pgid: int, want: set[str]) -> set[str]:
    deadline = time.monotonic() + 5
    while (got := _states(pgid)) != want and time.monotonic() < deadline:
        time.sleep(0.02)
    return got


def test_a_group_is_frozen_whole_and_thawed_once(group):
    pause = GroupPause(group.pid)
    members = pause.stop()
    assert {m["pid"] for m in members} >= {group.pid} and len(members) == 2
    assert _wait_states(group.pid, {psutil.STATUS_STOPPED}) == {psutil.STATUS_STOPPED}
    assert pause.frozen
    time.sleep(0.1)
    frozen = pause.resume()
    assert frozen is not None and frozen >= 0.1
    assert psutil.STATUS_STOPPED not in _wait_states(group.pid, {psutil.STATUS_SLEEPING})
    assert pause.resume() is None  # idempotent: a second thaw (abort after end) does nothing


def test_refuses_the_callers_own_group_and_an_empty_one():
    with pytest.raises(ValueError):
        GroupPause(os.getpgrp())
    p = subprocess.Popen(["true"], start_new_session=True)
    p.wait()
    with pytest.raises(ProcessLookupError):
        GroupPause(p.pid).stop()


class Runner:
    """What the injector uses of a SystemRunner for emulator_restart."""

    def __init__(self, pgid: int | None, owned: bool = True) -> None:
        st = SimpleNamespace(owned=owned, pgid=pgid)
        self.stack = SimpleNamespace(endpoint=lambda name: "127.0.0.1:9", emulators={"pubsub": st})
        self.system = SimpleNamespace(project="p", subscriptions=[])
        self.ledger = Ledger("eta-sub", "logistics.events")
        self.push = SimpleNamespace(counters=SimpleNamespace(delivered=0))
        self.bridges = SimpleNamespace(metrics=SimpleNamespace(ledgers={"eta-sub": self.ledger}),
                                       push={"eta-sub": self.push}, relays={}, proxy=None)


def test_emulator_restart_freezes_for_the_window_and_records_settlements_inside(group, monkeypatch):
    monkeypatch.setattr(faults_mod, "SETTLE_S", 0.3)
    r = Runner(group.pid)
    inj = FaultInjector(r, [Fault(kind="emulator_restart", at=10, duration=20, target="pubsub")], 10.0,
                        say=lambda m: None)
    inj.tick(10.0)  # frozen for 20 scenario s = 2 wall s
    assert _wait_states(group.pid, {psutil.STATUS_STOPPED}) == {psutil.STATUS_STOPPED}
    r.ledger.see("m1", 1.0, ("k",))
    r.ledger.settle("m1")  # settled before the measured window opens: not counted
    r.push.counters.delivered += 1  # ... and delivered before it
    time.sleep(0.6)
    r.ledger.settle("m2")  # an ack reported inside (the tap has not seen m2): counted
    r.push.counters.delivered += 2  # deliveries seen inside: counted
    inj.tick(30.0)
    assert psutil.STATUS_STOPPED not in _wait_states(group.pid, {psutil.STATUS_SLEEPING})
    (ev,) = inj.events
    assert (ev["kind"], ev["start_s"], ev["end_s"]) == ("emulator_restart", 10.0, 30.0)
    d = ev["details"]
    assert d["pgid"] == group.pid and len(d["processes"]) == 2 and 0.6 <= d["frozen_wall_s"] < 2.0
    assert d["settled_inside"] == {"eta-sub": 1} and d["delivered_inside"] == {"eta-sub": 2}


def test_the_thaw_is_on_time_even_when_the_main_loop_does_not_tick(group, monkeypatch):
    # the main loop can be stuck in a call to the frozen emulator; the window must still close
    monkeypatch.setattr(faults_mod, "SETTLE_S", 0.1)
    r = Runner(group.pid)
    inj = FaultInjector(r, [Fault(kind="emulator_restart", at=0, duration=5)], 10.0, say=lambda m: None)
    inj.tick(0.0)  # 5 scenario s = 0.5 wall s
    assert _wait_states(group.pid, {psutil.STATUS_STOPPED}) == {psutil.STATUS_STOPPED}
    time.sleep(1.0)
    assert psutil.STATUS_STOPPED not in _states(group.pid)
    inj.tick(12.0)
    d = inj.events[0]["details"]
    assert 0.45 <= d["frozen_wall_s"] < 1.5 and d["settled_inside"] == {"eta-sub": 0}
    assert d["delivered_inside"] == {"eta-sub": 0}


def test_emulator_restart_is_thawed_by_abort_and_refused_when_not_ours(group):
    r = Runner(group.pid)
    inj = FaultInjector(r, [Fault(kind="emulator_restart", at=0, duration=60)], 10.0, say=lambda m: None)
    inj.tick(0.0)
    assert _wait_states(group.pid, {psutil.STATUS_STOPPED}) == {psutil.STATUS_STOPPED}
    inj.abort()  # Ctrl-C mid-window
    assert psutil.STATUS_STOPPED not in _wait_states(group.pid, {psutil.STATUS_SLEEPING})

    ext = FaultInjector(Runner(None, owned=False), [Fault(kind="emulator_restart", at=0, duration=60)], 10.0,
                        say=lambda m: None)
    ext.tick(0.0)
    assert ext.active == [] and "not started by surgesim" in ext.events[0]["details"]["failed"]
