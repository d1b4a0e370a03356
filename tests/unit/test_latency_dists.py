"""Latency distributions in the three files: every form parses (with p50/p99/mean filled,
which the live harness reads), the simulator's draws have the written moments, empirical
latencies come from a CSV next to the YAML file, and mistakes give one line naming the
file, the line and the field."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from surgesim.schema import Latency, SchemaError, load_experiment
from surgesim.sim.core import sample

N = 400_000  # draws per moment check: sampling error of a mean ~ cv / sqrt(N) < 0.3%


def lat(value) -> Latency:
    return Latency.model_validate(value)


def draws(value, n: int = N, seed: int = 7) -> np.ndarray:
    return sample(lat(value), n, np.random.default_rng(seed))


def test_the_old_forms_keep_their_meaning():
    const = lat({"p50": 0.005})
    assert (const.dist, const.p50, const.p99, const.mean) == (None, 0.005, None, 0.005)
    assert np.all(draws({"p50": "5ms"}, 10) == 0.005)
    ln = lat({"p50": "20ms", "p99": "80ms"})
    x = draws({"p50": "20ms", "p99": "80ms"})
    assert np.median(x) == pytest.approx(0.020, rel=0.01)
    assert np.percentile(x, 99) == pytest.approx(0.080, rel=0.02)
    assert x.mean() == pytest.approx(ln.mean, rel=0.01)


@pytest.mark.parametrize("spec,mean,cv", [
    ({"dist": "exponential", "mean": "100ms"}, 0.1, 1.0),
    ({"dist": "gamma", "mean": "100ms", "cv": 0.5}, 0.1, 0.5),
    ({"dist": "gamma", "mean": "40ms", "cv": 2.0}, 0.04, 2.0),
    ({"dist": "erlang", "mean": "100ms", "k": 4}, 0.1, 0.5),
    ({"dist": "lognormal", "mean": "50ms", "cv": 1.5}, 0.05, 1.5),
    ({"dist": "uniform", "min": "10ms", "max": "30ms"}, 0.02, (0.02 / math.sqrt(12)) / 0.02),
    ({"dist": "constant", "value": "7ms"}, 0.007, 0.0),
])
def test_draws_have_the_written_mean_and_cv(spec, mean, cv):
    x = draws(spec)
    parsed = lat(spec)
    assert parsed.mean == pytest.approx(mean, rel=1e-9)
    assert x.mean() == pytest.approx(mean, rel=0.01)
    assert x.std() / x.mean() == pytest.approx(cv, rel=0.03, abs=1e-9)
    # the p50/p99 the schema fills (for the live harness's fakes) are the draws' own
    assert np.median(x) == pytest.approx(parsed.p50, rel=0.02)
    if parsed.p99 is not None and cv > 0:
        assert np.percentile(x, 99) == pytest.approx(parsed.p99, rel=0.03)


def test_exponential_percentiles_are_closed_form():
    e = lat({"dist": "exponential", "mean": "100ms"})
    assert e.p50 == pytest.approx(0.1 * math.log(2)) and e.p99 == pytest.approx(0.1 * math.log(100))
    g = lat({"dist": "erlang", "mean": "100ms", "k": 1})  # Erlang-1 is the exponential
    assert g.p50 == pytest.approx(e.p50, rel=1e-6) and g.p99 == pytest.approx(e.p99, rel=1e-6)


def test_empirical_inline_samples_and_histogram():
    s = lat({"dist": "empirical", "samples": ["10ms", "20ms", "30ms", "40ms", "50ms"]})
    x = sample(s, N, np.random.default_rng(1))
    assert x.min() >= 0.010 and x.max() <= 0.050
    assert x.mean() == pytest.approx(0.030, rel=0.01) and s.mean == pytest.approx(0.030)
    h = lat({"dist": "empirical", "histogram": [["10ms", 0], ["20ms", 3], ["40ms", 1]]})
    y = sample(h, N, np.random.default_rng(2))
    assert ((y >= 0.010) & (y <= 0.020)).mean() == pytest.approx(0.75, abs=0.005)
    assert y.max() <= 0.040 and y.min() >= 0.010
    assert h.p50 == pytest.approx(0.010 + 0.010 * (0.5 / 0.75))


SYSTEM = """\
name: measured
services:
  - name: api
    routes:
      - name: get
        path: /get
        steps:
          - cpu: {cpu}
"""
PLAN = """\
name: warm
services:
  api: {min_instances: 4, max_instances: 4}
"""
SCENARIO = """\
name: measured
system: system.yaml
plan: plan.yaml
duration: 10m
step: 1s
traffic:
  sources:
    - {name: calls, rate: 50/s, request: {service: api, route: get}}
"""


def files(tmp_path: Path, cpu: str, csv: str | None = None, csv_name: str = "latencies.csv") -> Path:
    (tmp_path / "system.yaml").write_text(SYSTEM.format(cpu=cpu))
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    (tmp_path / "plan.yaml").write_text(PLAN)  # warm instances: no request waits
    if csv is not None:
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / csv_name).write_text(csv)
    return tmp_path / "scenario.yaml"


def test_empirical_csv_relative_to_the_yaml_file_drives_the_simulator(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    measured = rng.gamma(2.0, 0.015, 5000)  # what a user measured in production (s)
    csv = "latency_ms\n" + "\n".join(f"{v * 1000:.4f}" for v in measured) + "\n"
    path = files(tmp_path, "{dist: empirical, file: data/latencies.csv}", csv)
    monkeypatch.chdir("/")  # the path is the YAML file's, not the working directory's
    exp = load_experiment(path)
    cpu = exp.system.services[0].routes[0].steps[0].spec
    assert cpu.dist == "empirical" and len(cpu.samples) == 5000
    assert cpu.p50 == pytest.approx(float(np.median(measured)), rel=0.01)
    from surgesim.sim.engine import Engine

    eng = Engine(exp).run()
    assert eng.wait_summaries()["api"]["pwait"] == 0
    h = eng.metrics.totals["latency/api.get"]
    assert h.count > 25_000
    assert h.mean == pytest.approx(float(measured.mean()), rel=0.02)  # no queue: latency = handler time
    assert h.percentile(99) == pytest.approx(float(np.percentile(measured, 99)), rel=0.05)


def test_empirical_csv_histogram_and_units(tmp_path):
    path = files(tmp_path, "{dist: empirical, file: data/h.csv}", "upper,count\n10ms,5\n20ms,15\n1s,0\n", "h.csv")
    cpu = load_experiment(path).system.services[0].routes[0].steps[0].spec
    assert cpu.histogram == [(0.01, 5.0), (0.02, 15.0), (1.0, 0.0)]
    assert cpu.p50 == pytest.approx(0.01 + 0.01 * (0.5 - 0.25) / 0.75)


# (cpu value, csv or None, "file:line: field: message" pattern)
MISTAKES = {
    "unknown dist": ("{dist: weibull, mean: 1s}", None, r"cpu\.dist: input should be 'constant', 'lognormal', .*got 'weibull'$"),
    "missing parameter": ("{dist: gamma, mean: 100ms}", None, r"cpu: gamma takes \{cv, mean\}, got mean$"),
    "parameter of another dist": ("{dist: exponential, mean: 100ms, cv: 2}", None, r"cpu: exponential takes \{mean\}, not cv$"),
    "parameters without dist": ("{mean: 100ms}", None, r"cpu: mean need a dist \(one of constant, lognormal"),
    "negative cv": ("{dist: gamma, mean: 100ms, cv: -1}", None, r"cpu: gamma: cv must be > 0, got -1$"),
    "erlang k not whole": ("{dist: erlang, mean: 100ms, k: 2.5}", None, r"cpu: erlang: k must be a whole number >= 1, got 2\.5$"),
    "uniform reversed": ("{dist: uniform, min: 30ms, max: 10ms}", None, r"cpu: uniform: max \(10ms\) must be >= min \(30ms\)$"),
    "bad duration": ("{dist: exponential, mean: fast}", None, r"cpu: expected a duration such as 250ms"),
    "csv missing": ("{dist: empirical, file: data/nope.csv}", None, r"cpu: empirical file '.*data/nope\.csv' not found$"),
    "csv bad value": ("{dist: empirical, file: data/latencies.csv}", "latency_ms\n12\n1x3\n",
                      r"cpu: empirical file 'latencies\.csv' line 3: expected a latency, got '1x3'$"),
    "histogram bounds": ("{dist: empirical, histogram: [[20ms, 1], [10ms, 1]]}", None,
                         r"cpu: empirical: histogram bucket bounds must increase$"),
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_mistakes_give_one_line_naming_file_line_and_field(tmp_path, name):
    cpu, csv, pattern = MISTAKES[name]
    path = files(tmp_path, cpu, csv)
    with pytest.raises(SchemaError) as info:
        load_experiment(path)
    problems = info.value.problems
    assert len(problems) == 1, problems
    # the file as it was reached: the scenario's path as given, then the system beside it
    assert problems[0].startswith(f"{path.parent / 'system.yaml'}:8: services[0].routes[0].steps[0]."), problems[0]
    assert re.search(pattern, problems[0]), problems[0]


def test_a_dumped_latency_reads_back_the_same():
    for spec in ({"dist": "gamma", "mean": "100ms", "cv": 0.5}, {"p50": "20ms", "p99": "80ms"},
                 {"dist": "empirical", "samples": ["1ms", "2ms"]}):
        a = lat(spec)
        assert lat(a.model_dump(exclude_none=True)) == a


def test_the_model_rejects_unknown_fields():
    with pytest.raises(ValidationError):
        lat({"dist": "exponential", "mean": "1s", "shape": 2})
