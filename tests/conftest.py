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
    stack.session_pids = {n: s.pid for n, s in stack.emulators.items() if s.owned}
    _session_stack.append(stack)
    try:
        yield stack
    finally:
        _session_stack.clear()
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


@pytest.fixture(scope="session", autouse=True)
def _service_logs_under_pytest_tmp(tmp_path_factory):
    """Services a test starts without a log directory write their logs under pytest's temp
    tree (pruned by pytest) instead of leaving files in /tmp."""
    old = os.environ.get("SURGESIM_SERVICE_LOG_DIR")
    os.environ["SURGESIM_SERVICE_LOG_DIR"] = str(tmp_path_factory.mktemp("service-logs"))
    yield
    if old is None:
        os.environ.pop("SURGESIM_SERVICE_LOG_DIR", None)
    else:
        os.environ["SURGESIM_SERVICE_LOG_DIR"] = old


_gcp_lost: list[str] = []
_session_stack: list = []


@pytest.fixture(scope="module", autouse=True)
def _no_stray_pubsub_clients(request):
    """Once a module's tests and its module-scoped services are done, no other process may
    still hold a connection to the session's Pub/Sub emulator: a consumer left running takes
    later tests' messages (CI twice found telemetry-livemap short by ~13%, the emulator
    empty, which the run's conservation check names as a consumer outside the run). Such a
    process is killed, so later modules are safe, and named in a warning (not a failure:
    the module's own tests passed), so the suite's summary says which module left it."""
    yield
    if not _session_stack:
        return
    import warnings

    gcp = _session_stack[0]
    strays = _strays(int(gcp.endpoint("pubsub").rsplit(":", 1)[1]), set(gcp.session_pids.values()))
    if strays:
        warnings.warn(f"{request.module.__name__} left processes connected to the session's Pub/Sub emulator "
                      f"(killed): {strays}", stacklevel=1)


def _strays(port: int, emulators: set[int], settle_s: float = 5.0) -> list[str]:
    """Processes other than this one and the emulators still connected to the emulator's
    port, given a few seconds to finish exiting; then killed and named."""
    import time

    import psutil

    mine = {os.getpid()} | emulators  # the Pub/Sub emulator's REST adapter calls its own gRPC port
    for pid in emulators:
        try:
            mine |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            pass
    deadline = time.monotonic() + settle_s
    while True:
        pids = {c.pid for c in psutil.net_connections(kind="tcp")
                if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                and c.pid is not None and c.pid not in mine}
        if not pids or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    named = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            named.append(f"{pid}: {' '.join(p.cmdline())[:200]}")
            p.kill()
        except psutil.Error:
            pass
    return named


@pytest.fixture(autouse=True)
def _gcp_stays_up(request):
    """The session's emulators must outlive every test that uses them. A test that kills or
    restarts one fails here, by name, and every later test that needs them fails at once
    instead of timing out one by one (a CI run once spent its whole budget that way)."""
    if "gcp" not in request.fixturenames:
        yield
        return
    if _gcp_lost:
        pytest.fail(f"the session's emulators are gone: {_gcp_lost[0]}")
    yield
    from surgesim.emulators import status

    gcp = request.getfixturevalue("gcp")
    now = status(list(gcp.session_pids), state_dir=gcp.state_dir, check=False).emulators
    lost = [f"{n} (pid {pid}: now {now[n].status}, pid {now[n].pid})" for n, pid in gcp.session_pids.items()
            if now[n].status != "running" or now[n].pid != pid]
    if lost:
        _gcp_lost.append(f"{', '.join(lost)} after {request.node.nodeid}")
        pytest.fail(f"this test left the session's emulators stopped or replaced: {', '.join(lost)}")


@pytest.fixture(scope="session")
def pgvector(gcp):
    """PostgreSQL + pgvector (emulators/postgres.py) on a free port in the `gcp` fixture's
    state dir, so a live run given that state dir reuses it. Stopped at session end, asserting
    its process group is gone and its cluster directory removed."""
    import psutil

    from surgesim.emulators import MissingToolError, down, up
    from surgesim.emulators.postgres import cluster_dir
    from surgesim.emulators.process import free_port, port_open

    port = free_port()
    try:
        stack = up("postgres", ports={"postgres": port}, project=gcp.project, state_dir=gcp.state_dir)
    except MissingToolError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL + pgvector not installed: {exc}")
    st = stack.emulators["postgres"]
    try:
        yield stack
    finally:
        down("postgres", state_dir=gcp.state_dir, timeout=10)
        left = []
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == st.pgid and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            except (psutil.Error, OSError):
                pass
        assert not left, f"postgres processes left behind: {left}"
        assert not port_open("127.0.0.1", port), f"postgres port {port} still answers"
        assert not cluster_dir(gcp.state_dir / "data" / "postgres").exists(), "the cluster directory was left behind"
