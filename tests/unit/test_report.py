"""The single-run report, built from synthetic run directories (tests/fixtures/synthetic_run.py)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from surgesim.reports import build_report, write_junit
from surgesim.reports.metrics import RunData, drain_time, percentile_series
from tests.fixtures.synthetic_run import write_synthetic_run
from surgesim.rundir import RunWriter, load_run

# 07:20-08:20 holds the 07:30 wave, the 07:45 consumer outage and the 08:10 error window
SHORT = {"duration_s": 3600.0, "start_clock_s": 7 * 3600.0 + 1200.0, "step_s": 10.0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    return {
        "baseline": write_synthetic_run(base / "baseline", plan="baseline", **SHORT),
        "lean": write_synthetic_run(base / "lean", plan="lean", capacity=0.3, **SHORT),
    }


@pytest.fixture(scope="module")
def html(runs) -> dict[str, str]:
    """Each report built once: drawing is the slow part."""
    return {name: build_report(path).read_text() for name, path in runs.items()}


def images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def assert_real_png(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 500
    # a plot with lines has many colours; a blank or axes-only image has a handful
    packed = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1].astype(np.int32) << 8) | pixels[..., 2]
    assert len(np.unique(packed)) > 50, f"{path} looks empty"


def test_report_has_every_plot_and_they_are_real_images(runs, html):
    html_path = runs["baseline"] / "report.html"
    html = html["baseline"]
    srcs = images(html)
    assert {Path(s).name for s in srcs} >= {"rates.png", "latency.png", "backlog.png", "lag.png", "instances.png",
                                            "dead_letters.png"}
    for src in srcs:
        assert not src.startswith(("/", "http")), "plots must be referenced relatively"
        assert_real_png(html_path.parent / src)
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_pass_and_fail_banners_and_slo_margins(runs, html):
    base, lean = html["baseline"], html["lean"]
    assert 'class="banner pass"' in base and "PASS — all 5 SLOs met" in base
    assert 'class="banner fail"' in lean
    failed = [s for s in load_run(runs["lean"]).summary["slos"] if not s["holds"]]
    assert f"FAIL — {len(failed)} of 5 SLOs missed" in lean
    # the failed latency SLO says by how much, in ms
    assert re.search(r"p99\(latency\.command\.mark_delivered\) &lt; 100ms \(observed \d+ ms, [\d.]+ ms over \(\d+%\)\)", lean)


def test_narrative_tells_the_timeline_and_the_peak(runs, html):
    story = html["lean"].split("<h2>What happened</h2>")[1].split("<h2>")[0]
    assert "wave dispatch_wave 07:30–07:39" in story
    assert "consumer down eta 07:45–07:55" in story
    data = RunData(load_run(runs["lean"]))
    sub, (peak, at) = max(data.peak_backlog().items(), key=lambda kv: kv[1][0])
    assert f"The largest backlog was {peak:,.0f} messages on {sub}" in story
    assert "had not drained by the end" in story


def minimal_run(directory: Path, **summary) -> Path:
    """A run with one instance series and whatever summary keys a test needs."""
    w = RunWriter(directory)
    w.write_timeseries(pd.DataFrame({"time_s": [0.0, 10.0], "metric": ["run.googleapis.com/container/instance_count"] * 2,
                                     "entity": ["command"] * 2, "value": [1.0, 2.0]}))
    w.write_summary({"mode": "sim", "scenario": "quiet", "system": "s", "plan": "p", "seed": 1, "duration_s": 20.0,
                     "start_clock_s": 0.0, "step_s": 10.0, "slos": [], "verdict": "pass", **summary})
    return directory


def test_conservation_ok_and_violation_are_visible(html, tmp_path):
    assert "Conservation OK for all 10 subscriptions" in html["baseline"] and "VIOLATION" not in html["baseline"]
    sub = {"published": 100, "acked": 90, "dead_lettered": 0, "filtered": 0, "backlog": 3}
    run = minimal_run(tmp_path / "leaky", totals={"subscriptions": {"eta-sub": {**sub, "delivered": 97}}},
                      conservation={"ok": False, "subscriptions": {"eta-sub": {**sub, "balance": 7}}})
    page = build_report(run).read_text()
    assert "Conservation VIOLATED" in page and "VIOLATION" in page
    assert "eta-sub balance +7" in page


def test_run_without_data_says_so_instead_of_empty_axes(tmp_path):
    html = build_report(minimal_run(tmp_path / "empty")).read_text()
    assert "No latency samples were recorded." in html
    assert "No backlog recorded." in html
    assert "No dead-letter counts were recorded." in html
    assert [Path(s).name for s in images(html)] == ["instances.png"]


def test_junit_has_one_case_per_slo_with_observed_and_threshold(runs):
    path = write_junit(runs["lean"])
    root = ET.parse(path).getroot()
    cases = root.findall(".//testcase")
    slos = load_run(runs["lean"]).summary["slos"]
    assert [c.get("name") for c in cases] == [s["text"] for s in slos]
    failures = {c.get("name"): c.find("failure") for c in cases}
    for s in slos:
        if s["holds"]:
            assert failures[s["text"]] is None
        else:
            assert "observed" in failures[s["text"]].get("message")
            assert "required" in failures[s["text"]].get("message")


def test_cli_rebuilds_report_and_junit(tmp_path):
    from surgesim.cli import cli

    run = minimal_run(tmp_path / "run", slos=[{"text": "max(rejected.command) == 0", "observed": 3.0, "holds": False}],
                      verdict="fail")
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "report.html").exists()
    assert "observed 3" in (run / "junit.xml").read_text()
    assert "verdict: FAIL" in result.output


def test_cli_refuses_a_directory_that_is_not_a_run(tmp_path):
    from surgesim.cli import cli

    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code != 0 and "not a surgesim run directory" in result.output


def test_window_percentiles_match_the_merged_histogram(runs):
    run = load_run(runs["baseline"])
    pct = percentile_series(run.histograms, 300.0)
    row = pct[(pct["path"] == "latency/command.mark_delivered") & (pct["time_s"] == 1800.0)].iloc[0]
    merged = run.histogram("latency/command.mark_delivered", 1800.0, 2100.0)
    assert row["count"] == merged.count
    for q in (50, 95, 99):
        assert row[f"p{q}"] == pytest.approx(merged.percentile(q), rel=0.02)


def test_long_run_gets_a_zoomed_backlog_around_its_events(tmp_path):
    run = write_synthetic_run(tmp_path / "long", duration_s=6 * 3600.0, start_clock_s=5 * 3600.0, step_s=30.0)
    html = build_report(run).read_text()
    assert "Backlog around the faults and waves (07:00–08:50)" in html
    assert "plots/backlog_zoom.png" in html
    # a short run is all "around the events": no zoom
    short = minimal_run(tmp_path / "short", duration_s=20.0)
    (short / "faults.json").write_text('[{"kind": "wave", "target": "w", "start_s": 0, "end_s": 10, "details": {}}]')
    assert "backlog_zoom" not in build_report(short).read_text()


def test_drain_time_none_when_the_backlog_never_recovers():
    events = [{"kind": "wave", "target": "w", "start_s": 100.0, "end_s": 200.0}]
    rising = pd.Series([0, 0, 50, 100, 150, 200], index=[0.0, 50, 100, 150, 200, 250])
    assert drain_time(rising, events, 50.0, 300.0) is None
    recovering = pd.Series([0, 0, 500, 1000, 400, 0, 0], index=[0.0, 50, 100, 150, 200, 250, 300])
    # up past max(pre, 1% of peak, 10 messages) between 100 s (0) and 150 s (500); back below it
    # between 250 s (400) and 300 s (0): the time it was up, whenever the wave ended
    assert drain_time(recovering, events, 50.0, 350.0) == pytest.approx(298.75 - 101.0)


def test_event_labels_name_waves_and_fault_targets():
    from surgesim.reports.metrics import event_label

    # the simulator writes the wave's name in details and the sources it drives in target
    assert event_label({"kind": "wave", "target": "gps,mark_delivered", "start_s": 0, "end_s": 1,
                        "details": {"name": "dispatch_wave"}}) == "wave dispatch_wave"
    assert event_label({"kind": "consumer_down", "target": "eta", "start_s": 0, "end_s": 1}) == "consumer down eta"
    assert event_label({"kind": "poison_message", "target": None, "start_s": 0, "end_s": 0,
                        "details": {"topic": "logistics.events"}}) == "poison message logistics.events"


def test_the_services_own_counters_are_in_the_report_when_a_live_run_has_them(tmp_path):
    page = build_report(minimal_run(tmp_path / "counted", live={"service_counters": {
        "relay-status": {"jobs_done": 12, "job_latency_s_p99": 61.25}}})).read_text()
    assert "The services&#39; own counters" in page or "The services' own counters" in page
    row = re.search(r"relay-status</td><td class=\"l\">job_latency_s_p99</td><td>([^<]+)<", page)
    assert row and row.group(1) == "61.25"
    assert "own counters" not in build_report(minimal_run(tmp_path / "plain")).read_text()


def test_without_matplotlib_the_report_says_where_its_plots_would_be(tmp_path, monkeypatch):
    """The base install has no matplotlib (the `plots` extra): the report is still built, with
    its tables and verdict, and names the extra instead of drawing. The real missing import is
    exercised by tests/integration/test_user_install.py."""
    from surgesim.reports import plots

    run = write_synthetic_run(tmp_path / "run", plan="baseline", **SHORT)
    (run / "plots").mkdir(exist_ok=True)
    (run / "plots" / "rates.png").write_bytes(b"stale")
    monkeypatch.setattr(plots, "MISSING", "No plots: matplotlib is not installed. pip install 'surgesim[plots]'")
    html = build_report(run).read_text()
    assert images(html) == []
    assert "pip install &#39;surgesim[plots]&#39;" in html or "pip install 'surgesim[plots]'" in html
    assert "SLO" in html and not list((run / "plots").glob("*.png")), "no stale PNG from an earlier build"
