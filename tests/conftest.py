"""Shared fixtures. `gcp`: the real emulators, started once per session the way users start them."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def gcp(tmp_path_factory):
    """A running emulator stack (``surgesim.emulators.Stack``) on free ports, in a tmp state dir.

    Use ``gcp.env_vars()`` (or ``monkeypatch.setenv``) and ``gcp.clients.publisher()`` /
    ``.subscriber()`` / ``.firestore()`` / ``.bigquery()`` / ``.storage()``; ``gcp.project``,
    ``gcp.endpoint("pubsub")``, ``gcp.state_dir``. ``gcp.fidelity`` holds the Pub/Sub probe.
    Torn down at session end, asserting that nothing the suite started is left running.
    """
    import psutil

    from surgesim.emulators import MissingToolError, down, status, up
    from surgesim.emulators.process import free_port, marked_processes, port_open

    state_dir = tmp_path_factory.mktemp("surgesim-emulators")
    ports: dict[str, int] = {}
    for key in ("pubsub", "firestore", "firestore_events", "bigquery", "bigquery_grpc", "storage"):
        while (port := free_port()) in ports.values():
            pass
        ports[key] = port
    try:
        stack = up(ports=ports, project="surgesim-test", state_dir=state_dir, probe=True)
    except MissingToolError as exc:
        if os.environ.get("CI"):
            raise  # CI installs the emulators: a missing one is a broken build, not a skip
        pytest.skip(f"emulators not installed: {exc}")
    except BaseException:
        down(state_dir=state_dir)  # whatever did start
        raise
    pgids = {s.pgid for s in stack.emulators.values() if s.owned}
    try:
        yield stack
    finally:
        pgids |= {s.pgid for s in status(state_dir=state_dir, check=False).emulators.values() if s.owned}
        down(state_dir=state_dir, timeout=10)
        left = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in marked_processes(state_dir)]
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) in pgids and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{p.pid} (pgid {os.getpgid(p.pid)}) {' '.join(p.cmdline())[:120]}")
            except (psutil.Error, OSError):
                pass
        still_open = [p for p in ports.values() if port_open("127.0.0.1", p)]
        assert not left, f"emulator processes left behind: {left}"
        assert not still_open, f"emulator ports still answering: {still_open}"
