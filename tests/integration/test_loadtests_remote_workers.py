"""Load from several machines, on 127.0.0.1: a Locust master (run_locust(master=...), what
`surgesim live --master` runs) and two `surgesim worker` commands started as separate
processes, pointed at a real HTTP server through a --target-env file. The workers send
exactly the one seeded schedule between them, hand their measurements to the master over
Locust's connection, and the master's merged result is what run_locust returns."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from surgesim.loadtests.plan import LivePlan
from surgesim.loadtests.runner import run_locust, worker_dir
from surgesim.loadtests.target import build_app, free_port, serve
from tests.integration.test_loadtests import assert_no_process_mentions, tiny

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DELAY_S = 0.03
WALL_S = 4.0  # the whole tiny scenario (40 s at time_scale 10)


def _full_schedule(scenario) -> dict[str, int]:
    """What one process would schedule (every share's sends), drawn here without sending."""
    plan = LivePlan(scenario)
    counts: dict[str, int] = {}
    for sources in plan.groups().values():
        table = plan.timetable(sources, duration_s=WALL_S)
        table.all_times()
        counts.update(table.scheduled)
    return counts


def test_a_master_and_two_worker_commands_send_the_schedule_once(tmp_path):
    scenario = tiny(tmp_path, rate=150)  # 75 sends/s to api (rate_scale 0.5) + 10 pings/s, for 4 s
    port = free_port()
    out = tmp_path / "master"
    holder: dict = {}
    workers: list[subprocess.Popen] = []
    with serve(build_app(delay_s=DELAY_S)) as (url, seen):
        env_file = tmp_path / "target.env"
        env_file.write_text(f"# the system under load\nAPI_URL={url}\n"
                            f"PUBSUB_EMULATOR_HOST={url.removeprefix('http://')}\nGOOGLE_CLOUD_PROJECT=p\n")

        def master() -> None:
            try:
                holder["result"] = run_locust(scenario, {"api": url, "pubsub": url.removeprefix("http://"),
                                                         "project": "p"}, WALL_S, out, workers=2,
                                              master=("127.0.0.1", port), wait_workers_s=60)
            except BaseException as exc:  # noqa: BLE001 -- asserted below
                holder["error"] = exc

        thread = threading.Thread(target=master, daemon=True)
        thread.start()
        try:
            for k in range(2):
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "surgesim.cli", "worker", str(scenario), "--master-host",
                     f"127.0.0.1:{port}", "--target-env", str(env_file), "--out", str(tmp_path / f"machine-{k}")],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            thread.join(150)
            codes = [w.wait(timeout=30) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        logs = [w.stdout.read() for w in workers]
    assert not thread.is_alive(), "the master did not finish"
    assert "error" not in holder, holder.get("error")
    assert codes == [0, 0], logs
    assert "waiting for it to start the test" in logs[0]
    assert_no_process_mentions(str(tmp_path))
    result = holder["result"]
    assert result.extra["returncode"] == 0 and not result.extra["killed"]
    # the results came over the wire: each worker kept its own copy on "its machine", and
    # the master wrote what it received into its own worker-<k>/
    for k in range(2):
        assert (worker_dir(out, k) / "loadgen.json").exists()
    assert sorted(p.name for p in (tmp_path / "machine-0").iterdir() if p.is_dir()) in (["worker-0"], ["worker-1"])
    # exactly the one schedule, each send once, from two processes
    full = _full_schedule(scenario)
    for source in ("steady", "pings"):
        c = result.counts[source]
        assert c["scheduled"] == full[source], (source, c, full)
        assert c["sent"] == c["ok"] == c["scheduled"], (source, c)
    hits = [s for s in seen if s["path"].startswith("/hit/")]
    assert len(hits) == result.counts["steady"]["sent"] > 200
    tags = [p["run_tag"] for p in result.extra["processes"]]
    assert len(set(tags)) == 2
    per_worker = [sum(1 for s in hits if s["request_id"].startswith(tag + "-")) for tag in tags]
    assert min(per_worker) > 0.4 * len(hits), per_worker
    # intended-time latency merged from both: every send measured once, at least the
    # server's 30 ms; a worker measuring from a wrong start would be off by seconds
    h = result.histograms["latency/api.hit"]
    assert h.count == len(hits)
    assert DELAY_S <= h.percentile(50) and h.percentile(90) < 1.0, (h.percentile(50), h.percentile(90))
    print(f"remote workers: {len(hits)} sends split {per_worker}; latency p50 {h.percentile(50) * 1000:.1f} ms, "
          f"p90 {h.percentile(90) * 1000:.1f} ms, p99 {h.percentile(99) * 1000:.1f} ms")


def test_a_worker_without_endpoints_says_which_and_exits_2(tmp_path):
    scenario = tiny(tmp_path)
    env_file = tmp_path / "target.env"
    env_file.write_text("GOOGLE_CLOUD_PROJECT=p\nnot a line\n")
    r = subprocess.run([sys.executable, "-m", "surgesim.cli", "worker", str(scenario), "--master-host", "127.0.0.1",
                        "--target-env", str(env_file)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"{env_file}:2: want KEY=VALUE" in r.stderr
    env_file.write_text("GOOGLE_CLOUD_PROJECT=p\n")
    r = subprocess.run([sys.executable, "-m", "surgesim.cli", "worker", str(scenario), "--master-host", "127.0.0.1",
                        "--target-env", str(env_file)], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in __import__("os").environ.items()
                            if not k.endswith("_URL") and k != "PUBSUB_EMULATOR_HOST"})
    assert r.returncode == 2
    assert "API_URL" in r.stderr and "PUBSUB_EMULATOR_HOST" in r.stderr, r.stderr
