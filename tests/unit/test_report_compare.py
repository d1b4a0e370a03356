"""Plan comparison across synthetic runs of one scenario under three plans."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from surgesim.reports import build_comparison, calibration_pair
from tests.fixtures.synthetic_run import write_synthetic_run
from surgesim.rundir import load_run

SHORT = {"duration_s": 3600.0, "start_clock_s": 7 * 3600.0 + 1200.0, "step_s": 10.0}


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("plans")
    return {plan: write_synthetic_run(base / plan, plan=plan, capacity=cap, **SHORT)
            for plan, cap in (("lean", 0.3), ("baseline", 1.0), ("generous", 2.0))}


@pytest.fixture(scope="module")
def page(plans, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    path = build_comparison(list(plans.values()), out)
    return path, path.read_text()


def test_cheapest_plan_meeting_every_slo_is_named_and_highlighted(plans, page):
    _, html = page
    summaries = {p: load_run(d).summary for p, d in plans.items()}
    assert summaries["lean"]["verdict"] == "fail"
    passing = {p: s["cost"]["per_day"]["total"] for p, s in summaries.items() if s["verdict"] == "pass"}
    best = min(passing, key=passing.get)
    assert re.search(rf'class="banner pass">Cheapest plan meeting all SLOs: {best} at \$[\d,.]+/day', html)
    header = re.search(r'<th class="best">.*?</th>', html, re.S).group(0)
    assert best in header and "cheapest passing" in header
    # the lean plan is cheaper but fails: it must not be the one highlighted
    assert summaries["lean"]["cost"]["per_day"]["total"] < passing[best]


def test_table_has_slos_p99_backlog_drain_dlq_instances_cost(page):
    _, html = page
    for label in ("SLOs met", "p99 command.mark_delivered", "peak backlog", "drain time", "dead-lettered",
                  "peak instances", "cost per day", "<code>max(rejected.command) == 0</code>"):
        assert label in html
    assert "never drained" in html or "not drained" in html


def test_overlaid_plots_exist(page):
    path, html = page
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert {Path(s).name for s in srcs} == {"compare_backlog.png", "compare_latency.png", "compare_instances.png"}
    for s in srcs:
        assert (path.parent / s).stat().st_size > 10_000


def test_no_passing_plan_says_so(plans, tmp_path):
    html = build_comparison([plans["lean"], plans["lean"]], tmp_path / "c").read_text()
    assert "No plan met all SLOs" in html
    assert "lean (lean)" in html  # duplicate plan names are told apart by run id


def test_calibration_pair_needs_one_sim_and_one_live_of_one_scenario():
    sim = {"mode": "sim", "scenario": "a"}
    live = {"mode": "live", "scenario": "a"}
    assert calibration_pair([live, sim]) == (1, 0)
    assert calibration_pair([sim, sim]) is None
    assert calibration_pair([sim, {"mode": "live", "scenario": "b"}]) is None
    assert calibration_pair([sim, live, sim]) is None


def test_cli_compares_several_runs_and_requires_out(plans, tmp_path):
    from surgesim.cli import cli

    runs = [str(plans["baseline"]), str(plans["generous"])]
    result = CliRunner().invoke(cli, ["report", *runs])
    assert result.exit_code != 0 and "--out" in result.output
    result = CliRunner().invoke(cli, ["report", *runs, "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "comparison.html").exists()


def test_without_matplotlib_the_comparison_keeps_its_table_and_names_the_extra(plans, tmp_path, monkeypatch):
    from surgesim.reports import plots

    monkeypatch.setattr(plots, "MISSING", "No plots: matplotlib is not installed. pip install 'surgesim[plots]'")
    html = build_comparison(list(plans.values()), tmp_path / "cmp").read_text()
    assert "<img" not in html and "surgesim[plots]" in html
    assert "cost per day" in html and "baseline" in html
