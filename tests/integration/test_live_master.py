"""`surgesim live --master` with its load from a `surgesim worker` started as a separate
command, on 127.0.0.1: the harness runs the system on the emulators, waits for the worker,
and the worker (told where to send by the target.env the master wrote) sends the whole
shortened ci_spike schedule (tests/integration/scenarios/ci_spike_locust.yaml). The run
directory holds the worker's measurements, merged by the master; nothing is left running.
About 60-90 s wall."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from surgesim.loadtests.target_env import read_target_env
from surgesim.ports import free_port
from tests.integration.test_loadtests import assert_no_process_mentions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "ci_spike_locust.yaml"


def test_live_master_takes_its_load_from_a_worker_command(gcp, tmp_path):
    out = tmp_path / "run"
    port = free_port()
    log = tmp_path / "master.log"
    env = {**os.environ, "COLUMNS": "200"}
    with open(log, "w") as f:
        master = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "live", str(SCENARIO), "--out", str(out),
                                   "--state-dir", str(gcp.state_dir), "--metrics-port", "0", "--master",
                                   "--expect-workers", "1", "--master-bind", f"127.0.0.1:{port}"],
                                  stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    worker = None
    try:
        target = out / "loadgen" / "target.env"
        deadline = time.monotonic() + 120
        while not target.exists() or "surgesim worker --master-host" not in log.read_text():
            assert master.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        said = re.search(r"surgesim worker --master-host (\S+) --target-env (\S+) (.*) (\S+)$", log.read_text(), re.M)
        assert said and said.group(1) == f"127.0.0.1:{port}" and said.group(2) == str(target), log.read_text()
        assert "COMMAND_URL" in read_target_env(target)
        worker_tmp = tmp_path / "worker-tmp"  # where its default (scratch) --out goes
        worker_tmp.mkdir()
        worker = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "worker", "--master-host", said.group(1),
                                   "--target-env", said.group(2), *said.group(3).split(), said.group(4)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env={**env, "TMPDIR": str(worker_tmp)},
                                  cwd=str(tmp_path), start_new_session=True)
        rc = master.wait(timeout=200)
        wrc = worker.wait(timeout=60)
    finally:
        for p in (master, worker):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    text = log.read_text()
    wlog = worker.stdout.read()
    assert rc in (0, 1) and wrc == 0, (rc, wrc, text[-3000:], wlog[-2000:])
    assert_no_process_mentions(str(tmp_path))
    assert (out / "summary.json").exists(), text[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["loadgen"]["counts"]
    for source in ("create_shipment", "gps"):
        c = counts[source]
        assert c["sent"] == c["ok"] == c["scheduled"] > 0, (source, c)
    # the worker's measurements reached the master's run directory, over Locust's connection
    assert (out / "loadgen" / "worker-0" / "loadgen.json").exists()
    assert not list(worker_tmp.iterdir())  # the worker's scratch copy went with it
    assert summary["latency"]["command.create_shipment"]["count"] == counts["create_shipment"]["sent"]
    assert (out / "report.html").exists()
    print(f"live --master: verdict {summary['verdict']}; create_shipment {counts['create_shipment']}; "
          f"latency {summary['latency']['command.create_shipment']}")
