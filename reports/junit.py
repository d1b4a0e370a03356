"""junit.xml from summary.slos and summary.checks: one testcase per SLO and per implicit check,
so CI shows which failed and by how much.

The XML itself is surgesim.slo.junit_xml, the same one the engines use."""

from __future__ import annotations

from pathlib import Path

from surgesim.rundir import load_run
from surgesim.slo import junit_xml


def suite_name(summary: dict) -> str:
    return f"surgesim.{summary.get('scenario')}.{summary.get('plan')}.{summary.get('mode')}"


def write_junit(run_dir: str | Path) -> Path:
    """Write run_dir/junit.xml from summary.json's SLO verdicts and implicit checks; return its path."""
    run = load_run(run_dir)
    out = run.dir / "junit.xml"
    out.write_text(junit_xml(run.summary.get("slos") or [], suite_name(run.summary), run.summary.get("checks")),
                   encoding="utf-8")
    return out
