"""Locust's distributed mode on this machine (run_locust(workers=2): a master and two
forked worker processes) against a real HTTP server on 127.0.0.1 with a fixed 30 ms
service time: the two workers send exactly the schedule one process sends, each its share,
and the merged intended-time latency matches one process's at the same rate within noise
(bounds below)."""

from __future__ import annotations

import pytest

from surgesim.loadtests.runner import run_locust, worker_dir
from surgesim.loadtests.target import build_app, serve
from tests.integration.test_loadtests import assert_no_process_mentions, tiny

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DELAY_S = 0.03
WALL_S = 4.0  # the whole tiny scenario (40 s at time_scale 10)


def _run(tmp_path, scenario, workers: int):
    out = tmp_path / f"workers-{workers}"
    with serve(build_app(delay_s=DELAY_S)) as (url, seen):
        result = run_locust(scenario, {"api": url, "pubsub": url.removeprefix("http://"), "project": "p"}, WALL_S,
                            out, workers=workers)
    assert_no_process_mentions(str(out))
    return result, [s for s in seen if s["path"].startswith("/hit/")], out


def test_two_workers_send_the_same_schedule_with_the_same_latency(tmp_path):
    scenario = tiny(tmp_path, rate=150)  # 75 sends/s to api (rate_scale 0.5) + 10 pings/s, for 4 s
    one, seen_one, _ = _run(tmp_path, scenario, 1)
    two, seen_two, out = _run(tmp_path, scenario, 2)
    assert two.extra["returncode"] == 0 and not two.extra["killed"]
    # the same seeded schedule, split: every scheduled send went, from two processes
    for source in ("steady", "pings"):
        assert two.counts[source]["scheduled"] == one.counts[source]["scheduled"]
        assert two.counts[source]["sent"] == two.counts[source]["ok"] == two.counts[source]["scheduled"]
    assert len(seen_two) == two.counts["steady"]["sent"] > 200
    tags = [p["run_tag"] for p in two.extra["processes"]]
    assert len(set(tags)) == 2
    per_worker = [sum(1 for s in seen_two if s["request_id"].startswith(tag + "-")) for tag in tags]
    assert min(per_worker) > 0.4 * len(seen_two), per_worker
    assert all((worker_dir(out, k) / "loadgen.json").exists() for k in range(2))
    assert two.histograms["latency/api.hit"].count == len(seen_two)
    # the latency distribution: the server's 30 ms plus this machine's overhead. "Within
    # noise" on a shared 2-core machine (load 14-22 when measured): one process's own p90
    # moved 52 -> 99 ms between back-to-back runs, so the bound is 2x or 50 ms; a broken
    # merge or a worker measuring from the wrong start would be off by far more (seconds).
    a, b = one.histograms["latency/api.hit"], two.histograms["latency/api.hit"]
    for q in (50, 90):
        pa, pb = a.percentile(q), b.percentile(q)
        assert pa >= DELAY_S and pb >= DELAY_S
        assert abs(pa - pb) < max(pa, pb, 0.05), (q, pa, pb)
    assert a.max < 2.0 and b.max < 2.0, (a.max, b.max)
    # once sent, a request takes the same time from either: what differs is when it is sent
    ra, rb = one.histograms["response/api.hit"].percentile(50), two.histograms["response/api.hit"].percentile(50)
    assert abs(ra - rb) < max(0.5 * ra, 0.02), (ra, rb)
    print(f"p50 {a.percentile(50) * 1000:.1f} vs {b.percentile(50) * 1000:.1f} ms, "
          f"p90 {a.percentile(90) * 1000:.1f} vs {b.percentile(90) * 1000:.1f} ms, "
          f"p99 {a.percentile(99) * 1000:.1f} vs {b.percentile(99) * 1000:.1f} ms "
          f"({a.count} vs {b.count} sends); response p90 "
          f"{one.histograms['response/api.hit'].percentile(90) * 1000:.1f} vs "
          f"{two.histograms['response/api.hit'].percentile(90) * 1000:.1f} ms, lateness p95 "
          f"{one.lateness['p95'] * 1000:.1f} vs {two.lateness['p95'] * 1000:.1f} ms")
