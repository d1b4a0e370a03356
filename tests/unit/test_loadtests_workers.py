"""Several load-generator processes sharing one schedule (Locust workers): each takes its
share of the timetable and of the prepared pools, and their results merge into what one
process would have measured. (The integration test with real Locust workers is
tests/integration/test_loadtests_workers.py.)"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from surgesim.loadtests.actions import Pools, load_prepared
from surgesim.loadtests.recorder import Recorder, merge_results
from surgesim.loadtests.recorder import LoadResult
from tests.unit.test_loadtests import tiny


@pytest.mark.parametrize("n", [2, 3])
def test_shares_of_a_timetable_partition_it(tmp_path, n):
    plan = tiny(tmp_path)
    whole = plan.timetable().all_times()
    shares = [plan.timetable(share=(k, n)).all_times() for k in range(n)]
    assert sorted((t, s.name) for share in shares for t, s in share) == sorted((t, s.name) for t, s in whole)
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1 and all(sizes)
    # each share spreads over the whole run (every n-th send, not a block of time)
    for share in shares:
        times = np.array([t for t, _ in share])
        assert times.min() < 1.0 and times.max() > plan.duration_s - 1.0
    tables = [plan.timetable(share=(k, n)) for k in range(n)]
    for t in tables:
        t.all_times()
    whole_table = plan.timetable()
    whole_table.all_times()
    for name, count in whole_table.scheduled.items():
        assert sum(t.scheduled[name] for t in tables) == count


def test_a_share_outside_the_workers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="share"):
        tiny(tmp_path).timetable(share=(2, 2))


def test_prepared_pools_are_split_between_workers(tmp_path):
    path = tmp_path / "prepare.json"
    path.write_text(json.dumps({"pools": {"ready": [{"id": f"P{i}"} for i in range(7)]}, "seconds": 1.5}))
    pools = [Pools() for _ in range(3)]
    for k, p in enumerate(pools):
        assert load_prepared(p, path, share=(k, 3)) == {"seconds": 1.5}
    got = [[item["id"] for item in p.items["ready"]] for p in pools]
    assert got == [["P0", "P3", "P6"], ["P1", "P4"], ["P2", "P5"]]


def _result(values: list[tuple[float, float]], source_counts: dict, tag: str) -> LoadResult:
    rec = Recorder(time_scale=10.0, window_s=1.0)
    for wall_t, v in values:
        rec.record("latency/api.get", "get", wall_t, 100.0, 100.0 + v / 2, 100.0 + v, ok=True, status=200,
                   generator="locust")
    for key, n in source_counts.items():
        rec.count("get", key, n)
    return LoadResult("locust", "tiny", {"time_scale": 10.0, "rate_scale": 1.0}, 60.0, rec.counts,
                      rec.histograms(), rec.rows(), extra={"run_tag": tag, "unfinished": 1})


def test_merged_results_equal_one_process_measuring_everything():
    rng = np.random.default_rng(3)
    samples = [(float(t), float(v)) for t, v in zip(rng.uniform(0, 20, 3000), rng.lognormal(-3, 1, 3000))]
    parts = [_result(samples[k::3], {"scheduled": 1000, "starved": k}, f"t{k}") for k in range(3)]
    one = _result(samples, {"scheduled": 3000, "starved": 3}, "all")
    merged = merge_results(parts)
    for path, h in one.histograms.items():
        m = merged.histograms[path]
        assert np.array_equal(m.counts, h.counts) and m.count == h.count
        assert m.total == pytest.approx(h.total) and (m.min, m.max) == (h.min, h.max)
    assert merged.histograms["latency/api.get"].summary() == pytest.approx(one.histograms["latency/api.get"].summary())
    assert merged.counts == one.counts
    pd.testing.assert_frame_equal(merged.rows.reset_index(drop=True), one.rows.reset_index(drop=True),
                                  check_dtype=False)
    assert merged.extra["unfinished"] == 3 and [p["run_tag"] for p in merged.extra["processes"]] == ["t0", "t1", "t2"]


def test_results_of_different_runs_do_not_merge():
    a = _result([(1.0, 0.1)], {}, "a")
    b = _result([(1.0, 0.1)], {}, "b")
    b.scales = {"time_scale": 20.0, "rate_scale": 1.0}
    with pytest.raises(ValueError, match="cannot merge"):
        merge_results([a, b])
    with pytest.raises(ValueError):
        merge_results([])
