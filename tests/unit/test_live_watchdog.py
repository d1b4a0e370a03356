"""The live harness's own bookkeeping around processes and signals, on real processes and
real signals (no emulator): the watchdog names a process that exits unexpectedly and not
one the harness stopped; SIGINT is ours whatever the caller left, and a second one only
hurries the stop; per-route and per-trigger totals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from surgesim.live import interrupts
from surgesim.live.procs import Proc
from surgesim.live.totals import route_totals, trigger_totals
from surgesim.live.watchdog import Watchdog


def _proc(tmp_path, name: str, code: str, kind: str = "service") -> Proc:
    log = tmp_path / f"{name}.log"
    p = Proc(name, [sys.executable, "-c", code], {}, 0, tmp_path, kind=kind)
    with open(log, "wb") as f:
        p.proc = subprocess.Popen(p.target, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    p.log_path = str(log)
    return p


def _runner(procs: dict, fakes: dict | None = None):
    return SimpleNamespace(procs=procs, fake_procs=fakes or {}, stack=None, bridges=None,
                           fronts=SimpleNamespace(_thread=None, _loop=None))


def test_watchdog_names_an_unexpected_exit_with_its_code_and_log_and_not_a_stopped_one(tmp_path):
    crash = _proc(tmp_path, "eta", "import sys; print('loading model'); print('boom: no such table', flush=True); sys.exit(3)")
    calm = _proc(tmp_path, "billing", "import time; time.sleep(30)")
    fake = _proc(tmp_path, "fake-sms", "import time; time.sleep(30)", kind="fake")
    said: list[str] = []
    dog = Watchdog(_runner({"eta": crash, "billing": calm}, {"sms": fake}), say=said.append, interval=0.1).start()
    try:
        calm.stop()  # the harness's own stop (a fault, a roll-out): not an unexpected exit
        deadline = time.monotonic() + 10
        while "eta" not in dog.exits and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        dog.stop()
    assert set(dog.exits) == {"eta"}, dog.exits
    (msg,) = said
    assert msg.startswith("!! service eta exited unexpectedly (exit code 3)"), msg
    assert "| boom: no such table" in msg and "| loading model" in msg
    procs = dog.processes()
    assert procs["eta"] == {"kind": "service", "running_at_end": False, "exit_code": 3, "stopped_by_fault": False,
                            "log_tail": ["loading model", "boom: no such table"]}
    assert procs["billing"]["running_at_end"] is False and procs["billing"]["exit_code"] is not None
    assert procs["fake-sms"]["kind"] == "fake" and procs["fake-sms"]["running_at_end"] is True
    fake.stop()


def test_a_dead_emulator_is_fatal_and_named(tmp_path):
    emu = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    st = SimpleNamespace(pid=emu.pid, owned=True, log_path=None, pgid=emu.pid)
    runner = _runner({})
    runner.stack = SimpleNamespace(emulators={"firestore": st}, endpoint=lambda name: "127.0.0.1:9")
    said: list[str] = []
    dog = Watchdog(runner, say=said.append)
    os.kill(emu.pid, signal.SIGKILL)
    emu.wait()
    dog.check()
    assert dog.fatal and dog.fatal.startswith(f"the firestore emulator (127.0.0.1:9, pid {emu.pid}) stopped during the run")
    assert said and said[0].startswith("!! emulator firestore-emulator exited unexpectedly")
    assert dog.processes()["firestore-emulator"]["running_at_end"] is False


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_is_ours_even_if_ignored_and_a_second_one_only_hurries(tmp_path):
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `nohup ... &`
    try:
        assert interrupts.install()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert not interrupts.hurry.is_set()
        os.kill(os.getpid(), signal.SIGTERM)  # the stop goes on; only its waits shorten
        time.sleep(0.1)
        assert interrupts.hurry.is_set() and interrupts.signals_seen == 2
        assert interrupts.stop_timeout(10.0) == 0.5
        # a stop under hurry kills a process that ignores SIGTERM at once instead of waiting
        stubborn = _proc(tmp_path, "stubborn",
                         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)")
        while "ready" not in (tmp_path / "stubborn.log").read_text():
            time.sleep(0.05)
        t0 = time.monotonic()
        stubborn.stop(timeout=30)
        assert time.monotonic() - t0 < 5 and not stubborn.group_alive()
    finally:
        interrupts.restore()
        signal.signal(signal.SIGINT, old)
    assert signal.getsignal(signal.SIGINT) is old and not interrupts.hurry.is_set()


def test_route_totals_count_rejections_and_errors_per_route():
    sources = [SimpleNamespace(name="a", request=SimpleNamespace(service="api", route="orders")),
               SimpleNamespace(name="b", request=SimpleNamespace(service="api", route="orders")),
               SimpleNamespace(name="gps", request=None)]
    counts = {"a": {"sent": 10, "ok": 6, "status_202": 6, "status_429": 2, "status_400": 1, "status_ConnectError": 1},
              "b": {"sent": 2, "status_503": 2}, "gps": {"sent": 5, "status_200": 5}}
    out = route_totals(SimpleNamespace(traffic=SimpleNamespace(sources=sources)), counts)
    assert out == {"api.orders": {"requests": 12, "rejected": 2, "errors": 4,
                                  "status": {"202": 6, "429": 2, "400": 1, "ConnectError": 1, "503": 2}}}


def test_trigger_totals_account_for_every_wanted_change():
    c = SimpleNamespace(changes=12, skipped=2, sent=6, gave_up=3, failures=31)
    out = trigger_totals(SimpleNamespace(triggers={"outbox": SimpleNamespace(counters=c)}))
    assert out == {"outbox": {"changes": 10, "delivered": 6, "given_up": 3, "pending": 1, "failed_attempts": 31}}
