"""`surgesim optimize --dask tcp://...` on a real Dask cluster: a scheduler and two worker
processes on 127.0.0.1 (distributed.LocalCluster), the M/M/c space of
tests/unit/test_optimize.py. The cluster's answer must be the local process pool's, row
for row (the runs are seeded, so the same plan gives the same summary wherever it runs),
the work must have run in the workers' processes, and the cluster must be gone after."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest
import yaml
from click.testing import CliRunner
from distributed import Client, LocalCluster

from surgesim.cli import cli

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _mmc_case(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "systems").mkdir()
    (tmp_path / "plans").mkdir()
    (tmp_path / "systems" / "mmc_exp.yaml").write_text((ROOT / "scenarios" / "systems" / "mmc_exp.yaml").read_text())
    (tmp_path / "plans" / "mmc.yaml").write_text((ROOT / "scenarios" / "plans" / "mmc.yaml").read_text())
    sc = yaml.safe_load((ROOT / "scenarios" / "mmc_exp_08.yaml").read_text())
    sc.update(duration="10m", slos=["max(rejected.server) == 0", "mean(wait.server) < 50ms"])
    (tmp_path / "sc.yaml").write_text(yaml.safe_dump(sc))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"services": {"server": {"instances": [3, 4, 5, 6]}}}))
    return tmp_path / "sc.yaml", tmp_path / "space.yaml"


def _comparable(rows: list[dict]) -> list[tuple]:
    return [(r["plan"], r["settings"], r["verdict"], r["cost_per_day"], r["p99"], r["margin"], r["failed"])
            for r in rows]


def test_dask_cluster_gives_the_local_pools_answer_and_is_shut_down(tmp_path: Path) -> None:
    scenario, space = _mmc_case(tmp_path)
    runner = CliRunner()
    local = runner.invoke(cli, ["optimize", str(scenario), "--space", str(space), "--workers", "2",
                                "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    local_res = json.loads((tmp_path / "local" / "optimize.json").read_text())

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        with Client(address) as client:
            worker_pids = set(client.run(os.getpid).values())
        assert len(worker_pids) == 2 and os.getpid() not in worker_pids
        res = runner.invoke(cli, ["optimize", str(scenario), "--space", str(space), "--dask", address,
                                  "--out", str(tmp_path / "dask")])
        assert res.exit_code == 0, res.output
        assert f"4 plans run on the Dask cluster at {address} (2 task slots)" in res.output
        # one progress line per candidate, as each finishes
        assert sum(line.startswith("[") and "/4] plan-" in line for line in res.output.splitlines()) == 4
        with Client(address) as client:
            # the scheduler saw the candidates' runs as tasks on its workers
            done = client.run_on_scheduler(
                lambda dask_scheduler: sum(1 for t in dask_scheduler.transition_log if t[0].startswith("_run_one")
                                           and t[2] == "memory"))
        assert done >= 4
    dask_res = json.loads((tmp_path / "dask" / "optimize.json").read_text())
    assert dask_res["backend"] == address and dask_res["workers"] == 2
    assert _comparable(dask_res["rows"]) == _comparable(local_res["rows"])
    assert dask_res["best"]["settings"] == local_res["best"]["settings"] == {"services.server.instances": 5}
    assert [r["verdict"] for r in dask_res["rows"]] == ["fail", "fail", "pass", "pass"]
    # the cluster is shut down: its worker processes have exited
    alive = [p for p in worker_pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"Dask worker processes left running: {alive}"


def test_dask_address_with_nobody_there_is_a_clear_error(tmp_path: Path) -> None:
    from surgesim.emulators.process import free_port

    scenario, space = _mmc_case(tmp_path)
    address = f"tcp://127.0.0.1:{free_port()}"
    res = CliRunner().invoke(cli, ["optimize", str(scenario), "--space", str(space), "--dask", address,
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert f"--dask {address}: no Dask scheduler answered" in res.output
