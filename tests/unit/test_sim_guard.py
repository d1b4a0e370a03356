"""The progress guard (sim/guard.py): a run that stops making progress ends with Stalled
and a clear message, and `surgesim sim` exits 2 on it (1 is a failed SLO)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from surgesim.cli import cli
from surgesim.schema import load_experiment
from surgesim.sim import guard as guard_module
from surgesim.sim.engine import Engine
from surgesim.sim.guard import Stalled

CYCLE_SYSTEM = """\
name: echo
topics: [{name: pings}]
subscriptions:
  - {name: pings-sub, topic: pings, consumer: echo}
services:
  - name: echo
    steps:
      - publish: {topic: pings, count: 2}
"""

JOB_SYSTEM = """\
name: batchy
jobs:
  - {name: sweep, items: 200000, batch_size: 1}
"""

SCENARIO = """\
name: s
system: system.yaml
duration: 30s
traffic:
  sources:
    - {SOURCE}
"""


def write(tmp_path: Path, system: str, source: str) -> Path:
    (tmp_path / "system.yaml").write_text(system)
    (tmp_path / "s.yaml").write_text(SCENARIO.replace("{SOURCE}", source))
    return tmp_path / "s.yaml"


def test_a_publish_cycle_that_doubles_messages_stops_with_a_message(tmp_path):
    exp = load_experiment(write(tmp_path, CYCLE_SYSTEM, "{name: p, rate: 10/s, publish: {topic: pings}}"))
    with pytest.raises(Stalled, match=r"messages handed to services within one step \(limit 20,000\)"):
        Engine(exp, guard={"max_messages_per_s": 10_000, "slack": 10_000}).run()


def test_a_cycle_that_dies_out_runs_to_the_end(tmp_path):
    # The guard measures work, it does not refuse cycles: half the messages echo once more.
    system = CYCLE_SYSTEM.replace("count: 2", "fraction: 0.5")
    exp = load_experiment(write(tmp_path, system, "{name: p, rate: 100/s, publish: {topic: pings}}"))
    eng = Engine(exp, guard={"max_messages_per_s": 10_000, "slack": 10_000}).run()
    published = eng.totals()["topics"]["pings"]["published"]
    assert 5_000 < published < 7_000  # ~3000 from the source, doubled by the echoes


def test_zero_time_events_without_virtual_progress_stop_with_a_message(tmp_path):
    exp = load_experiment(write(tmp_path, JOB_SYSTEM, "{name: go, kind: once, at: 1s, job: sweep}"))
    with pytest.raises(Stalled, match=r"t=1s: more than 50,000 events without virtual time advancing"):
        Engine(exp, guard={"max_events_at_instant": 50_000, "check_every": 1024}).run()


def test_zero_time_events_within_the_limit_complete(tmp_path):
    exp = load_experiment(write(tmp_path, JOB_SYSTEM.replace("200000", "2000"), "{name: go, kind: once, at: 1s, job: sweep}"))
    eng = Engine(exp, guard={"max_events_at_instant": 50_000, "check_every": 1024}).run()
    assert eng.jobs["sweep"].totals["tasks_run"] == 1


def test_the_wall_clock_ends_a_step_that_never_finishes(tmp_path):
    exp = load_experiment(write(tmp_path, JOB_SYSTEM, "{name: go, kind: once, at: 1s, job: sweep}"))
    ticks = iter(range(10**9))
    with pytest.raises(Stalled, match=r"one step has run for more than 5 wall seconds"):
        Engine(exp, guard={"clock": lambda: float(next(ticks)), "max_wall_per_step_s": 5, "check_every": 1024}).run()


def test_sim_exits_2_with_the_message(tmp_path, monkeypatch):
    monkeypatch.setattr(guard_module, "MAX_EVENTS_AT_INSTANT", 50_000)
    path = write(tmp_path, JOB_SYSTEM, "{name: go, kind: once, at: 1s, job: sweep}")
    result = CliRunner().invoke(cli, ["sim", str(path), "--out", str(tmp_path / "run"), "--no-report", "--no-split"])
    assert result.exit_code == 2, result.output
    assert f"{path}: simulation stopped at t=1s" in result.output
    assert "Traceback" not in result.output
