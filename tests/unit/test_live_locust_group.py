"""LocustGroup: the harness's handle on Locust's process group (a real `sh`+`sleep` group
stands in for Locust), killed whether the kill comes after or before Locust started."""

from __future__ import annotations

import os
import subprocess
import time

import psutil

from surgesim.live.session import LocustGroup


def _start_group() -> subprocess.Popen:
    p = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    deadline = time.monotonic() + 5
    while not psutil.Process(p.pid).children() and time.monotonic() < deadline:
        time.sleep(0.02)
    return p


def _alive(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (psutil.Error, OSError):
            pass
    return out


def test_kill_takes_the_whole_group_including_children():
    p = _start_group()
    group = LocustGroup()
    group.attach(p)
    assert group.pid == p.pid and len(_alive(p.pid)) == 2
    group.kill()
    assert _alive(p.pid) == []


def test_a_kill_before_locust_started_kills_it_when_it_starts():
    group = LocustGroup()
    group.kill()  # Ctrl-C while the generator thread was still starting Locust
    p = _start_group()
    group.attach(p)
    assert _alive(p.pid) == []
