"""`surgesim live --bind ADDRESS`: the harness (Cloud Run fronts, /metrics, the Locust
master) listens on 127.0.0.1 unless told otherwise. Checked on the listening sockets
themselves (psutil), with real servers on this machine only: 127.0.0.1 by default, 0.0.0.0
when asked, and the URLs the harness hands out stay reachable either way."""

from __future__ import annotations

import threading
import time

import httpx
import psutil
import pytest
from click.testing import CliRunner

from surgesim.emulators.front import FrontSettings
from surgesim.live.fronts import FrontSet
from surgesim.live.prometheus import serving
from surgesim.loadtests.runner import run_locust
from surgesim.loadtests.target import build_app, free_port, serve
from tests.integration.test_loadtests import assert_no_process_mentions, tiny

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _listening(pid: int, port: int) -> set[str]:
    """The addresses process `pid` listens on at `port`."""
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


@pytest.mark.parametrize("bind, expect", [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_fronts_listen_on_loopback_unless_bound_elsewhere(bind, expect):
    import os

    fronts = FrontSet() if bind is None else FrontSet(bind)
    with serve(build_app()) as (upstream, seen):
        try:
            url = fronts.add("api", upstream, FrontSettings(cold_start_p50=0.0, cold_start_p99=None))
            assert _listening(os.getpid(), fronts.ports["api"]) == {expect}
            # the URL the services and generators get is reachable either way
            assert url == f"http://127.0.0.1:{fronts.ports['api']}"
            assert httpx.post(url + "/hit/1", timeout=10).status_code == 202
        finally:
            fronts.stop()
    assert len(seen) == 1


@pytest.mark.parametrize("bind, expect", [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_metrics_listen_on_loopback_unless_bound_elsewhere(bind, expect):
    import os

    port = free_port()
    kwargs = {} if bind is None else {"host": bind}
    with serving(None, port, say=lambda m: None, **kwargs) as url:
        assert _listening(os.getpid(), port) == {expect}
        assert url == f"http://127.0.0.1:{port}/metrics"
    assert _listening(os.getpid(), port) == set()


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
def test_the_locust_master_listens_where_it_is_bound(tmp_path, bind):
    """The Locust process `--master` starts (run_locust(master=...)) listens on the bind
    address; with no worker coming it gives up after its wait and the run fails, naming it."""
    scenario = tiny(tmp_path)
    port = free_port()
    started: dict = {}
    holder: dict = {}

    def master() -> None:
        try:
            run_locust(scenario, {"api": "http://127.0.0.1:9", "pubsub": "127.0.0.1:9", "project": "p"}, 2.0,
                       tmp_path / "out", workers=1, master=(bind, port), wait_workers_s=4,
                       on_start=lambda p: started.update(pid=p.pid))
        except BaseException as exc:  # noqa: BLE001 -- asserted below
            holder["error"] = exc

    thread = threading.Thread(target=master, daemon=True)
    thread.start()
    seen: set[str] = set()
    deadline = time.time() + 60
    while time.time() < deadline and not seen:
        if "pid" in started:
            try:
                seen = _listening(started["pid"], port)
            except psutil.NoSuchProcess:
                break
        time.sleep(0.2)
    thread.join(90)
    assert seen == {bind}
    assert "no results" in str(holder.get("error")), holder
    assert_no_process_mentions(str(tmp_path))


def test_the_cli_binds_the_harness_to_loopback_by_default(monkeypatch, tmp_path):
    """Where `surgesim live` asks the run to listen (the run itself is the tests above and
    test_live_master.py): 127.0.0.1 for everything unless --bind says otherwise."""
    import surgesim.live.session as session
    from surgesim.cli import cli

    calls: list[dict] = []

    def fake_run_live(*args, **kwargs):
        calls.append(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "run_live", fake_run_live)
    scenario = str(tiny(tmp_path))
    CliRunner().invoke(cli, ["live", scenario, "--master"])
    CliRunner().invoke(cli, ["live", scenario, "--master", "--bind", "0.0.0.0"])
    r = CliRunner().invoke(cli, ["live", scenario, "--bind", "0.0.0.0", "--master", "--master-bind", "127.0.0.1:6000"])
    assert [(c["bind"], c["master"]) for c in calls] == [
        ("127.0.0.1", ("127.0.0.1", 5557)), ("0.0.0.0", ("0.0.0.0", 5557)), ("0.0.0.0", ("127.0.0.1", 6000))]
    assert "accept connections from other machines" in r.output
    r = CliRunner().invoke(cli, ["live", scenario, "--bind", "example.com"])
    assert r.exit_code == 2 and "--bind" in r.output
