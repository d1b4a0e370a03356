"""Freezing an emulator for a live `emulator_restart` fault: SIGSTOP to its process group,
SIGCONT after the window, with its in-memory state (topics, subscriptions, backlog, leases)
untouched.

Why not a real restart: the gcloud Pub/Sub emulator keeps everything in memory, so a kill
and start on the same port loses every topic, subscription and unacked message; putting
them back means re-provisioning and re-publishing under new message ids, which is not the
same messages any more (the ledgers that prove conservation count by message id). A
frozen emulator is unavailable in the same way for its clients (connections open, no
answer) and comes back with what it had, which is what the simulator models.

A frozen process group must never be left frozen: resume() is idempotent, registered with
atexit while frozen, and the live session calls FaultInjector.abort() on Ctrl-C, SIGTERM
and errors. If the harness is SIGKILLed mid-window, `kill -CONT -<pgid>` (printed when
the fault starts) resumes it, and `surgesim up` would find it unhealthy and restart it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import time

import psutil


class GroupPause:
    """SIGSTOP / SIGCONT of one process group (an emulator started by surgesim leads its own)."""

    def __init__(self, pgid: int) -> None:
        if pgid <= 1 or pgid == os.getpgrp():
            raise ValueError(f"refusing to stop process group {pgid}")
        self.pgid = pgid
        self.stopped_at: float | None = None
        self.resumed_at: float | None = None

    def members(self) -> list[dict]:
        out = []
        for p in psutil.process_iter(["pid", "name"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(p.pid) == self.pgid:
                    out.append({"pid": p.pid, "name": p.info["name"]})
        return out

    @property
    def frozen(self) -> bool:
        return self.stopped_at is not None and self.resumed_at is None

    def stop(self) -> list[dict]:
        """Freeze every member; returns them (pid, name). Raises if the group is gone."""
        members = self.members()
        if not members:
            raise ProcessLookupError(f"process group {self.pgid} has no members")
        atexit.register(self.resume)  # before the signal: a crash in between still resumes
        os.killpg(self.pgid, signal.SIGSTOP)
        self.stopped_at = time.monotonic()
        return members

    def resume(self) -> float | None:
        """Thaw the group (idempotent); returns the wall seconds it was frozen."""
        if not self.frozen:
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGCONT)
        self.resumed_at = time.monotonic()
        atexit.unregister(self.resume)
        return self.resumed_at - self.stopped_at
