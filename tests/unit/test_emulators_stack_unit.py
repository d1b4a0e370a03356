"""up/down/status state logic, with `python -m http.server` standing in for an emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from surgesim.emulators import (
    Clients,
    EmulatorError,
    MissingToolError,
    PortConflictError,
    StartupError,
    down,
    env_vars,
    status,
    stray_processes,
    up,
)
from surgesim.emulators.base import Emulator, http_get
from surgesim.emulators.cli import emulators_group
from surgesim.emulators.gcloud_sdk import require_emulator
from surgesim.emulators.probe import FidelityReport, load_fidelity
from surgesim.emulators.process import free_port, marked_processes, port_open, wait_for
from surgesim.emulators.state import STATE_FILE, State, load_state, resolve_state_dir, save_state

SERVE = (
    # wrapper -> child, like gcloud -> java; the child serves data_dir
    "import subprocess, sys; subprocess.run([sys.executable, '-m', 'http.server', '--bind', sys.argv[1], "
    "sys.argv[2], '--directory', sys.argv[3]])"
)


class WebEmulator(Emulator):
    """An 'emulator' that is http.server serving a directory holding health.txt."""

    name = "web"
    title = "test web server"
    port_keys = ("web",)
    startup_timeout = 15.0

    def __init__(self, port: int, argv: list[str] | None = None) -> None:
        self.default_ports = {"web": port}
        self.argv = argv

    def check_installed(self) -> None:
        pass

    def prepare(self, env: dict[str, str], data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "health.txt").write_text("web-ok")

    def command(self, host: str, ports: Mapping[str, int], project: str, data_dir: Path) -> list[str]:
        return self.argv or [sys.executable, "-c", SERVE, host, str(ports["web"]), str(data_dir)]

    def healthy(self, host: str, ports: Mapping[str, int], project: str, timeout: float = 1.0) -> bool:
        r = http_get(f"http://{host}:{ports['web']}/health.txt", timeout)
        return r is not None and r.status_code == 200 and r.text == "web-ok"

    def env_vars(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        return {"WEB_EMULATOR_HOST": f"{host}:{ports['web']}"}


@pytest.fixture
def web(tmp_path):
    reg = {"web": WebEmulator(free_port())}
    yield reg, tmp_path / "state"
    down(state_dir=tmp_path / "state", registry=reg, timeout=3)
    assert marked_processes(tmp_path / "state") == []


def test_up_starts_records_and_second_up_reuses(web):
    reg, sd = web
    msgs: list[str] = []
    s1 = up(registry=reg, state_dir=sd, project="p", on_message=msgs.append)
    st = s1["web"]
    assert (st.status, st.owned, st.healthy, st.action) == ("running", True, True, "started")
    assert st.startup_seconds is not None and st.startup_seconds < 15
    rec = load_state(sd).started["web"]
    assert rec.pid == st.pid and rec.pgid == st.pid and rec.ports == st.ports
    assert Path(rec.log_path).parent == sd / "logs"
    assert json.loads((sd / STATE_FILE).read_text())["started"]["web"]["pid"] == st.pid

    s2 = up(registry=reg, state_dir=sd)
    assert s2["web"].action == "reused" and s2["web"].pid == st.pid
    assert any("already running" in m and "reusing" in m for m in s2.messages)
    assert s2.project == "p"  # remembered
    assert s2.env_vars() == {"WEB_EMULATOR_HOST": f"127.0.0.1:{st.ports['web']}", "GOOGLE_CLOUD_PROJECT": "p"}
    assert env_vars(sd) == {}  # the default registry knows no 'web'


def test_dead_emulator_is_reported_and_restarted(web):
    reg, sd = web
    first = up(registry=reg, state_dir=sd)["web"]
    os.killpg(first.pgid, signal.SIGKILL)
    assert wait_for(lambda: status(registry=reg, state_dir=sd)["web"].status == "dead", 5)
    s = up(registry=reg, state_dir=sd)
    assert f"web emulator (pid {first.pid}) is not running; restarting" in s.messages
    assert s["web"].action == "restarted" and s["web"].pid != first.pid and s["web"].healthy
    assert s["web"].ports == first.ports


def test_killed_wrapper_orphan_is_cleaned_before_restart(web):
    reg, sd = web
    first = up(registry=reg, state_dir=sd)["web"]
    os.kill(first.pid, signal.SIGKILL)  # only the wrapper: its child keeps the port
    assert wait_for(lambda: status(registry=reg, state_dir=sd)["web"].status == "dead", 5)
    assert [p.pid for p in stray_processes(sd)]  # the orphaned child
    s = up(registry=reg, state_dir=sd)
    assert s["web"].action == "restarted"
    assert stray_processes(sd) == []
    assert len(marked_processes(sd)) == 2  # the new wrapper + child only


def test_alive_but_unhealthy_is_restarted(web, monkeypatch):
    reg, sd = web
    first = up(registry=reg, state_dir=sd)["web"]
    monkeypatch.setattr("surgesim.emulators.stack.UNHEALTHY_GRACE", 0.3)
    (sd / "data" / "web" / "health.txt").unlink()  # now answers 404
    assert status(registry=reg, state_dir=sd)["web"].status == "unhealthy"
    s = up(registry=reg, state_dir=sd)
    assert any("running but not healthy" in m for m in s.messages)
    assert s["web"].pid != first.pid and s["web"].healthy


def test_down_stops_only_ours_and_clears_state(web):
    reg, sd = web
    st = up(registry=reg, state_dir=sd)["web"]
    res = down(state_dir=sd, registry=reg)
    assert [r.pid for r in res.stopped] == [st.pid] and res.stopped[0].was_running
    assert not (sd / STATE_FILE).exists()
    assert marked_processes(sd) == [] and not port_open("127.0.0.1", st.ports["web"])
    assert status(registry=reg, state_dir=sd)["web"].status == "stopped"
    assert "no emulator started by surgesim" in down(state_dir=sd, registry=reg).messages[0]


def test_healthy_foreign_server_is_reused_but_never_stopped(web, tmp_path):
    reg, sd = web
    port = reg["web"].default_ports["web"]
    served = tmp_path / "foreign"
    served.mkdir()
    (served / "health.txt").write_text("web-ok")
    foreign = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                                "--directory", str(served)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: port_open("127.0.0.1", port), 10)
        s = up(registry=reg, state_dir=sd)
        assert (s["web"].status, s["web"].owned, s["web"].action) == ("external", False, "external")
        assert "not started by surgesim" in s.messages[0]
        state = load_state(sd)
        assert state.started == {} and "web" in state.external
        assert status(registry=reg, state_dir=sd)["web"].status == "external"
        res = down(state_dir=sd, registry=reg)
        assert res.stopped == [] and any("left the web emulator" in m for m in res.messages)
        assert foreign.poll() is None and port_open("127.0.0.1", port)
        assert not (sd / STATE_FILE).exists()
    finally:
        foreign.terminate()
        foreign.wait()


def test_port_taken_by_something_else_is_a_clear_error(web, tmp_path):
    reg, sd = web
    port = reg["web"].default_ports["web"]
    other = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                              "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: port_open("127.0.0.1", port), 10)
        with pytest.raises(PortConflictError, match=f"port {port}.*does not answer as a test web server"):
            up(registry=reg, state_dir=sd)
        assert load_state(sd).started == {}
    finally:
        other.terminate()
        other.wait()


def test_explicit_different_port_while_running_is_refused(web):
    reg, sd = web
    up(registry=reg, state_dir=sd)
    with pytest.raises(PortConflictError, match="down --only web"):
        up(registry=reg, state_dir=sd, ports={"web": free_port()})


def test_process_that_exits_gives_startup_error_with_log_tail(tmp_path):
    reg = {"web": WebEmulator(free_port(), argv=[sys.executable, "-c", "import sys; print('boom: no config'); sys.exit(3)"])}
    with pytest.raises(StartupError) as err:
        up(registry=reg, state_dir=tmp_path)
    assert "exited (code 3)" in str(err.value) and "boom: no config" in str(err.value)
    assert load_state(tmp_path).started == {}


def test_startup_timeout_stops_the_process(tmp_path):
    reg = {"web": WebEmulator(free_port(), argv=[sys.executable, "-c", "import time; print('starting...', flush=True); time.sleep(60)"])}
    with pytest.raises(StartupError, match=r"did not answer .* within 1 s[\s\S]*starting\.\.\."):
        up(registry=reg, state_dir=tmp_path, timeout=1)
    assert load_state(tmp_path).started == {}
    assert marked_processes(tmp_path) == []


def test_missing_gcloud_names_the_packages(tmp_path):
    with pytest.raises(MissingToolError) as err:
        require_emulator("pubsub", path=str(tmp_path))  # an empty PATH
    text = str(err.value)
    for needle in ("google-cloud-cli-pubsub-emulator", "google-cloud-cli-firestore-emulator",
                   "default-jre-headless", "gcloud components install", "pubsub-emulator", "cloud-firestore-emulator"):
        assert needle in text


def test_missing_component_is_detected_without_starting(tmp_path):
    # a fake SDK layout with gcloud but no emulator jars
    root = tmp_path / "sdk"
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "lib" / "gcloud.py").write_text("")
    gcloud = root / "bin" / "gcloud"
    gcloud.write_text("#!/bin/sh\nexit 1\n")
    gcloud.chmod(0o755)
    with pytest.raises(MissingToolError, match="google-cloud-cli-firestore-emulator"):
        require_emulator("firestore", path=str(root / "bin"))


def test_unknown_names_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown emulator"):
        status("pubsub,nope", state_dir=tmp_path)


def test_state_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("SURGESIM_HOME", str(tmp_path / "h"))
    assert resolve_state_dir() == tmp_path / "h"
    assert resolve_state_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("SURGESIM_HOME")
    assert resolve_state_dir() == Path.home() / ".surgesim"


def test_empty_state_removes_file_and_corrupt_state_is_explained(tmp_path):
    save_state(State(project="p", external={"x": {"ports": {"x": 1}}}), tmp_path)
    assert load_state(tmp_path).project == "p"
    save_state(State(), tmp_path)
    assert not (tmp_path / STATE_FILE).exists()
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a valid surgesim state file"):
        load_state(tmp_path)


def test_cli_status_and_down_on_empty_state(tmp_path):
    r = CliRunner().invoke(emulators_group, ["status", "--state-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    for name in ("pubsub", "firestore", "bigquery", "storage"):
        assert name in r.output and "stopped" in r.output
    r = CliRunner().invoke(emulators_group, ["status", "--json", "--state-dir", str(tmp_path)])
    assert json.loads(r.output)["emulators"]["pubsub"]["status"] == "stopped"
    r = CliRunner().invoke(emulators_group, ["down", "--state-dir", str(tmp_path)])
    assert r.exit_code == 0
    r = CliRunner().invoke(emulators_group, ["up", "--only", "nope", "--state-dir", str(tmp_path)])
    assert r.exit_code != 0 and "unknown emulator" in r.output


def test_clients_say_which_variable_is_missing():
    with pytest.raises(EmulatorError, match="PUBSUB_EMULATOR_HOST is not set"):
        Clients({}).publisher()


def test_fidelity_report_roundtrip_and_summary(tmp_path):
    rep = FidelityReport(emulator="pubsub", endpoint="127.0.0.1:1", project="p", emulator_version="0.8.20",
                         gcloud_version="528.0.0", measured_at="now", duration_s=1.0,
                         filter_applied=False, dead_letter_applied=True, dead_letter_after_attempts=5)
    assert "filters NOT applied" in rep.summary() and "dead-letter applied (after 5 attempts)" in rep.summary()
    assert "push unknown" in rep.summary()
    (tmp_path / "fidelity.json").write_text(json.dumps(rep.to_dict()))
    assert load_fidelity(tmp_path) == rep
    assert load_fidelity(tmp_path / "none") is None
