"""A `schedule:` source (Cloud Scheduler -> a Cloud Run job): unix-cron on the scenario's
clock (surgesim/cron.py), validated where the scenario is, and the simulator starting one
execution of the job at each time it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from surgesim.cron import CronError, fire_times, parse
from surgesim.schema import load_experiment
from surgesim.schema.loading import SchemaError
from surgesim.sim.engine import Engine

SYSTEM = """\
name: batchy
jobs:
  - name: sweep
    tasks: 2
    parallelism: 2
    items: 4
    batch_size: 1
    steps:
      - cpu: {p50: 1s, p99: 1s}
"""


def scenario(tmp_path: Path, source: str, *, start_clock: str = "00:00", duration: str = "2h") -> Path:
    (tmp_path / "system.yaml").write_text(SYSTEM)
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nsystem: system.yaml\nduration: {duration}\nstart_clock: \"{start_clock}\"\n"
                    f"traffic:\n  sources:\n    - {source}\n")
    return path


@pytest.mark.parametrize("expr, start_clock, duration, expected", [
    ("*/30 * * * *", 0, 7200, [0.0, 1800.0, 3600.0, 5400.0]),
    ("0 2 * * *", 6 * 3600, 86400, [20 * 3600.0]),               # 02:00 is 20 h after a 06:00 start
    ("15,45 9-10 * * *", 9 * 3600, 3 * 3600, [900.0, 2700.0, 4500.0, 6300.0]),
    ("* * * * *", 90, 300, [30.0, 90.0, 150.0, 210.0, 270.0]),   # minute boundaries of the clock, not of t
    ("0-59/20 * * * *", 0, 3600, [0.0, 1200.0, 2400.0]),
    ("0 0 * * *", 23 * 3600, 2 * 3600, [3600.0]),                # the clock wraps at midnight
])
def test_fire_times_are_the_clock_minutes_the_schedule_names(expr, start_clock, duration, expected):
    assert fire_times(expr, start_clock, duration) == expected


@pytest.mark.parametrize("expr, says", [
    ("* * *", "5 fields"),
    ("60 * * * *", "minute is 0-59"),
    ("0 24 * * *", "hour is 0-23"),
    ("5/15 * * * *", "a step goes with * or a range"),
    ("*/0 * * * *", "whole number >= 1"),
    ("30-10 * * * *", "runs backwards"),
    ("0 2 1 * *", "day-of-month must be *"),
    ("0 2 * * MON", "not *, a number"),
    ("0 2 * * 1", "day-of-week must be *"),
])
def test_bad_schedules_say_what_is_wrong(expr, says):
    with pytest.raises(CronError, match=re.escape(says)):
        parse(expr)


def test_a_bad_schedule_is_a_validation_error_at_its_line_and_field(tmp_path):
    path = scenario(tmp_path, "{name: nightly, job: sweep, schedule: '0 2 1 * *'}")
    with pytest.raises(SchemaError) as e:
        load_experiment(path)
    text = "\n".join(e.value.problems)
    assert "s.yaml:7" in text and "traffic.sources[0].schedule" in text and "day-of-month must be *" in text


@pytest.mark.parametrize("source, says", [
    ("{name: nightly, kind: schedule, job: sweep}", "needs `job` and `schedule`"),
    ("{name: nightly, job: sweep, schedule: '* * * * *', at: 5m}", "not `at`"),
    ("{name: nightly, kind: once, at: 1m, job: sweep, schedule: '* * * * *'}", "goes with kind: schedule"),
    ("{name: nightly, job: sweepp, schedule: '* * * * *'}", "job 'sweepp' is not in system"),
])
def test_schedule_sources_are_validated(tmp_path, source, says):
    with pytest.raises(SchemaError) as e:
        load_experiment(scenario(tmp_path, source))
    assert says in "\n".join(e.value.problems)


def test_the_simulator_starts_an_execution_at_each_scheduled_time(tmp_path):
    exp = load_experiment(scenario(tmp_path, "{name: every20, job: sweep, schedule: '*/20 * * * *'}",
                                   start_clock="08:10", duration="1h"))
    assert exp.scenario.traffic.sources[0].kind == "schedule"  # implied by schedule:
    eng = Engine(exp)
    eng.run()
    rec = eng.jobs["sweep"].record()
    # 08:20, 08:40 and 09:00 on the clock: 10, 30 and 50 minutes in; not 08:10 itself
    assert rec["starts_s"] == [600.0, 1800.0, 3000.0]
    assert rec["executions"] == 3 and rec["state"] == "succeeded"
    assert eng.totals()["jobs"]["sweep"]["tasks_run"] == 6


def test_a_once_job_source_still_starts_once_at_its_time(tmp_path):
    eng = Engine(load_experiment(scenario(tmp_path, "{name: go, kind: once, at: 7m, job: sweep}")))
    eng.run()
    assert eng.jobs["sweep"].record()["starts_s"] == [420.0]
