"""The real emulators through the code users run: up/reuse, dead detection, down."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from surgesim.emulators import down, status, stray_processes, up
from surgesim.emulators.process import free_port, marked_processes, port_open, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A second, private stack (Pub/Sub + Storage) for the tests that kill emulators:
    the session stack `gcp` is shared with other modules and must keep its state."""
    d = tmp_path_factory.mktemp("scratch-emulators")
    stack = up("pubsub,storage", ports={"pubsub": free_port(), "storage": free_port()}, state_dir=d, project="scratch")
    yield stack
    down(state_dir=d)
    assert marked_processes(d) == []


def test_all_four_are_running_ours_and_healthy(gcp):
    st = status(state_dir=gcp.state_dir)
    for name in ("pubsub", "firestore", "bigquery", "storage"):
        s = st[name]
        assert (s.status, s.owned, s.healthy) == ("running", True, True), s
        assert psutil.Process(s.pid).is_running()
    # gcloud spawns java in the same process group
    java = [p for p in psutil.Process(st["pubsub"].pid).children(recursive=True) if "java" in p.name()]
    assert java and os.getpgid(java[0].pid) == st["pubsub"].pgid


def test_second_up_reuses_the_same_processes(gcp):
    # what runs (PostgreSQL is optional: `up` starts it only when named)
    before = {n: s.pid for n, s in status(state_dir=gcp.state_dir).emulators.items() if s.pid}
    again = up(state_dir=gcp.state_dir)
    assert {n: s.action for n, s in again.emulators.items()} == dict.fromkeys(before, "reused")
    assert {n: s.pid for n, s in again.emulators.items()} == before
    # GOOGLE_CLOUD_PROJECT is whichever project the last `up` named (the emulators serve any).
    hosts = {k: v for k, v in again.env_vars().items() if k.endswith("_HOST")}
    assert hosts == {k: v for k, v in gcp.env_vars().items() if k.endswith("_HOST")}


def test_env_vars_point_at_the_emulators(gcp):
    env = gcp.env_vars()
    p = gcp.ports
    assert env["PUBSUB_EMULATOR_HOST"] == f"127.0.0.1:{p('pubsub')['pubsub']}"
    assert env["FIRESTORE_EMULATOR_HOST"] == f"127.0.0.1:{p('firestore')['firestore']}"
    assert env["BIGQUERY_EMULATOR_HOST"] == f"127.0.0.1:{p('bigquery')['bigquery']}"
    assert env["BIGQUERY_EMULATOR_GRPC_HOST"] == f"127.0.0.1:{p('bigquery')['bigquery_grpc']}"
    assert env["STORAGE_EMULATOR_HOST"] == f"http://127.0.0.1:{p('storage')['storage']}"
    assert env["GOOGLE_CLOUD_PROJECT"] == "surgesim-test"


def test_killed_storage_emulator_is_detected_and_restarted(scratch):
    d = scratch.state_dir
    old = status("storage", state_dir=d)["storage"]
    os.killpg(old.pgid, signal.SIGKILL)
    assert wait_for(lambda: status("storage", state_dir=d)["storage"].status == "dead", 5)
    s = up("storage", state_dir=d)
    assert f"storage emulator (pid {old.pid}) is not running; restarting" in s.messages
    assert s["storage"].pid != old.pid and s["storage"].healthy and s["storage"].ports == old.ports


def test_killed_gcloud_wrapper_leaves_no_java_orphan(scratch):
    d = scratch.state_dir
    old = status("pubsub", state_dir=d)["pubsub"]
    java = [p for p in psutil.Process(old.pid).children(recursive=True) if "java" in p.name()]
    assert java
    os.kill(old.pid, signal.SIGKILL)  # only gcloud's python: its java keeps serving the port
    assert wait_for(lambda: status("pubsub", state_dir=d)["pubsub"].status == "dead", 5)
    assert {p.pid for p in stray_processes(d)} >= {j.pid for j in java}
    s = up("pubsub", state_dir=d)
    assert f"pubsub emulator (pid {old.pid}) is not running; restarting" in s.messages
    assert s["pubsub"].healthy and s["pubsub"].pid != old.pid
    assert not any(_alive(j) for j in java)
    assert stray_processes(d) == []


def test_someone_elses_emulator_is_reused_and_left_running(gcp, tmp_path):
    port = gcp.ports("storage")["storage"]
    other = up("storage", state_dir=tmp_path, ports={"storage": port})
    assert (other["storage"].status, other["storage"].owned) == ("external", False)
    res = down(state_dir=tmp_path)
    assert res.stopped == []
    assert status("storage", state_dir=gcp.state_dir)["storage"].status == "running"


def test_down_leaves_no_process_and_frees_ports(scratch):
    # last in this module: it stops the scratch stack
    d = scratch.state_dir
    stack = status(state_dir=d)
    ports = [p for n in ("pubsub", "storage") for p in stack.ports(n).values()]
    procs = []
    for n in ("pubsub", "storage"):
        leader = psutil.Process(stack[n].pid)
        procs += [leader, *leader.children(recursive=True)]
    assert len(procs) >= 3  # gcloud + java + storage
    res = down(state_dir=d)
    assert sorted(r.name for r in res.stopped if r.was_running) == ["pubsub", "storage"]
    assert res.ports_still_open == []
    assert not any(_alive(p) for p in procs)
    assert marked_processes(d) == []
    assert not any(port_open("127.0.0.1", p) for p in ports)
    assert not (d / "state.json").exists()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
