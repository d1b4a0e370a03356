"""The real emulators through the code users run: up/reuse, dead detection, down."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from surgesim.emulators import down, status, stray_processes, up
from surgesim.emulators.process import free_port, marked_processes, port_open, wait_for

pytestmark = pytest.mark.integration


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
    before = {n: s.pid for n, s in status(state_dir=gcp.state_dir).emulators.items()}
    again = up(state_dir=gcp.state_dir)
    assert {n: s.action for n, s in again.emulators.items()} == dict.fromkeys(before, "reused")
    assert {n: s.pid for n, s in again.emulators.items()} == before
    assert again.env_vars() == gcp.env_vars()


def test_env_vars_point_at_the_emulators(gcp):
    env = gcp.env_vars()
    p = gcp.ports
    assert env["PUBSUB_EMULATOR_HOST"] == f"127.0.0.1:{p('pubsub')['pubsub']}"
    assert env["FIRESTORE_EMULATOR_HOST"] == f"127.0.0.1:{p('firestore')['firestore']}"
    assert env["BIGQUERY_EMULATOR_HOST"] == f"127.0.0.1:{p('bigquery')['bigquery']}"
    assert env["BIGQUERY_EMULATOR_GRPC_HOST"] == f"127.0.0.1:{p('bigquery')['bigquery_grpc']}"
    assert env["STORAGE_EMULATOR_HOST"] == f"http://127.0.0.1:{p('storage')['storage']}"
    assert env["GOOGLE_CLOUD_PROJECT"] == "surgesim-test"


def test_killed_storage_emulator_is_detected_and_restarted(gcp):
    old = status("storage", state_dir=gcp.state_dir)["storage"]
    os.killpg(old.pgid, signal.SIGKILL)
    assert wait_for(lambda: status("storage", state_dir=gcp.state_dir)["storage"].status == "dead", 5)
    s = up("storage", state_dir=gcp.state_dir)
    assert f"storage emulator (pid {old.pid}) is not running; restarting" in s.messages
    assert s["storage"].pid != old.pid and s["storage"].healthy and s["storage"].ports == old.ports


def test_killed_gcloud_wrapper_leaves_no_java_orphan(gcp):
    old = status("pubsub", state_dir=gcp.state_dir)["pubsub"]
    java = [p for p in psutil.Process(old.pid).children(recursive=True) if "java" in p.name()]
    os.kill(old.pid, signal.SIGKILL)  # only gcloud's python: its java keeps serving the port
    assert wait_for(lambda: status("pubsub", state_dir=gcp.state_dir)["pubsub"].status == "dead", 5)
    assert {p.pid for p in stray_processes(gcp.state_dir)} >= {j.pid for j in java}
    s = up("pubsub", state_dir=gcp.state_dir)
    assert f"pubsub emulator (pid {old.pid}) is not running; restarting" in s.messages
    assert s["pubsub"].healthy and s["pubsub"].pid != old.pid
    assert not any(j.is_running() and j.status() != psutil.STATUS_ZOMBIE for j in java)
    assert stray_processes(gcp.state_dir) == []


def test_someone_elses_emulator_is_reused_and_left_running(gcp, tmp_path):
    port = gcp.ports("storage")["storage"]
    other = up("storage", state_dir=tmp_path, ports={"storage": port})
    assert (other["storage"].status, other["storage"].owned) == ("external", False)
    res = down(state_dir=tmp_path)
    assert res.stopped == []
    assert status("storage", state_dir=gcp.state_dir)["storage"].status == "running"


def test_down_leaves_no_process_and_frees_ports(tmp_path):
    ports = {"pubsub": free_port(), "storage": free_port()}
    stack = up("pubsub,storage", ports=ports, state_dir=tmp_path, project="down-test")
    pids = set()
    for s in stack.emulators.values():
        pids |= {s.pid} | {c.pid for c in psutil.Process(s.pid).children(recursive=True)}
    assert len(pids) >= 3  # gcloud + java + storage
    res = down(state_dir=tmp_path)
    assert sorted(r.name for r in res.stopped if r.was_running) == ["pubsub", "storage"]
    assert res.ports_still_open == []
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    assert marked_processes(tmp_path) == []
    assert not any(port_open("127.0.0.1", p) for p in ports.values())
    assert not (tmp_path / "state.json").exists()
