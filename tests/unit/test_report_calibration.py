"""Calibration: a synthetic sim run against a synthetic 'live' run at 2% volume, one minute
windows and 25% slower handlers. The report must find that 25%."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from surgesim.reports import build_calibration
from surgesim.reports.calibration import relative_error
from tests.fixtures.synthetic_run import write_synthetic_run
from surgesim.rundir import load_run

SHORT = {"duration_s": 3600.0, "start_clock_s": 7 * 3600.0 + 1200.0}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cal")
    sim = write_synthetic_run(base / "sim", step_s=10.0, **SHORT)
    live = write_synthetic_run(base / "live", mode="live", rate_scale=0.02, time_scale=60.0, step_s=60.0,
                               latency_factor=1.25, seed=7, **SHORT)
    return sim, live


@pytest.fixture(scope="module")
def page(pair, tmp_path_factory) -> str:
    return build_calibration(*pair, tmp_path_factory.mktemp("out") / "cal").read_text()


def error_of(html: str, metric: str, entity: str) -> float:
    m = re.search(rf'<td class="l">{re.escape(metric)}</td><td class="l">{re.escape(entity)}</td>'
                  rf'<td>[^<]*</td><td>[^<]*</td><td class="\w*">([+-][\d.]+)%</td>', html)
    assert m, f"no row for {metric} {entity}"
    return float(m.group(1)) / 100


def test_slower_live_handlers_show_as_positive_latency_error(pair, page):
    sim, live = (load_run(d).summary["latency"] for d in pair)
    for route in ("create_shipment", "assign_driver", "mark_delivered"):
        path = f"command.{route}"
        shown = error_of(page, "latency p50", path)
        assert shown == pytest.approx(live[path]["p50"] / sim[path]["p50"] - 1, abs=0.001)
        # live handlers are 1.25x slower in the synthetic live run (its load differs a little too)
        assert 0.15 < shown < 0.5


def test_live_counts_are_rescaled_to_the_sims_volume(page):
    assert "multiplied by <b>50</b>" in page
    # same model at 2% volume: the wave's geofence backlog agrees once multiplied by 50
    assert abs(error_of(page, "peak backlog", "telemetry-geofence")) < 0.3


def test_headline_and_plots(page):
    assert "Median |relative error|" in page
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert [Path(s).name for s in srcs] == ["calibration_backlog.png", "calibration_latency.png"]


def test_relative_error_definition():
    assert relative_error(100.0, 120.0) == pytest.approx(0.2)
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(0.0, 5.0) is None
    assert relative_error(None, 1.0) is None


def test_cli_picks_calibration_for_a_sim_and_a_live_run(pair, tmp_path):
    from surgesim.cli import cli

    sim, live = pair
    result = CliRunner().invoke(cli, ["report", str(live), str(sim), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "calibration:" in result.output and (tmp_path / "c" / "calibration.html").exists()
