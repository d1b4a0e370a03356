"""surgesim.live.incidents reads any run: every route and subscription it measured, before /
during / after each wave and fault (on a synthetic run, tests/fixtures/synthetic_run.py)."""

from surgesim.live.incidents import figures
from surgesim.rundir import load_run
from tests.fixtures.synthetic_run import write_synthetic_run

SHORT = {"duration_s": 3600.0, "start_clock_s": 7 * 3600.0 + 1200.0, "step_s": 10.0}


def test_every_route_and_subscription_gets_windows_around_each_disturbance(tmp_path):
    run_dir = write_synthetic_run(tmp_path / "run", **SHORT)
    run = load_run(run_dir)
    fig = figures(run_dir)
    routes, subs = run.paths("latency"), run.paths("lag")
    assert len(routes) >= 4 and len(subs) >= 4
    assert set(fig["latency"]) == set(routes)
    assert set(subs) <= set(fig["lag"]) and set(subs) <= set(fig["backlog"])
    kinds = [d["kind"] for d in fig["disturbances"]]
    assert sorted(kinds) == ["consumer_down", "dependency_errors", "wave"]
    for d in fig["disturbances"]:
        assert set(d["latency"]) == set(routes) and set(subs) <= set(d["lag"])
        for phases in (*d["latency"].values(), *d["lag"].values()):
            assert set(phases) == {"before", "during", "after", "outside"}
    # the windows are real cuts of the samples: before + during + after = all, per route
    start, end = fig["window_s"]
    for route, entry in fig["latency"].items():
        assert entry["before"]["n"] + entry["during"]["n"] + entry["after"]["n"] == entry["all"]["n"], route
    # and they show the incident: the consumer that was down (eta, of eta-sub) acks nothing
    # during its outage, and what it acks after carries the outage in its lag
    down = next(d for d in fig["disturbances"] if d["kind"] == "consumer_down")
    lag = down["lag"]["eta-sub"]
    assert lag["during"]["n"] == 0 and lag["before"]["n"] > 0, lag
    assert lag["after"]["p50_ms"] > 100 * lag["before"]["p50_ms"], lag
    assert {t for t in fig["published"]} and all(p["total"] > 0 for p in fig["published"].values())


def test_a_run_without_disturbances_has_whole_run_figures_only(tmp_path):
    run_dir = write_synthetic_run(tmp_path / "run", faults=False, **{**SHORT, "start_clock_s": 9 * 3600.0})
    fig = figures(run_dir)
    assert all("all" in v for v in fig["latency"].values())
