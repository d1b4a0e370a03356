"""Random YAML and random structures never make schema loading fail with anything but
SchemaError (a one-line-per-problem message), and never hang."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from surgesim.schema import SchemaError, validate_file

# SURGESIM_FUZZ_SCALE=10 runs ten times the examples (for a longer hunt than CI needs).
SCALE = float(os.environ.get("SURGESIM_FUZZ_SCALE", "1"))
SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

# Keys the schema knows, so random structures reach deep into the models.
KEYS = sorted({
    "name", "topics", "subscriptions", "services", "jobs", "stores", "triggers", "workflows", "external_apis",
    "topic", "consumer", "delivery", "filter", "ack_deadline", "retry", "dead_letter", "max_attempts",
    "min_backoff", "max_backoff", "retention", "bigquery", "table", "routes", "steps", "cpu", "sleep",
    "firestore", "call", "publish", "poll", "vector", "storage", "collection", "op", "api", "path", "p50", "p99",
    "traffic", "sources", "waves", "curves", "kind", "vehicles", "ping_interval", "rate", "per_day", "at",
    "duration", "ramp", "rates", "multiply", "faults", "slos", "target", "system", "plan", "start_clock",
    "min_instances", "max_instances", "concurrency", "latency", "rate_limit", "every", "tasks", "items",
    "columns", "type", "partition_field", "dataset", "request", "service", "route", "live", "debounce",
})

scalars = (st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True)
           | st.text(max_size=12) | st.sampled_from(["5s", "10m", "1h30m", "1600/s", "07:30", "abc", "a.b",
                                                      "p99(latency.x) < 1s", "attributes.k = \"v\"", "-1", ""]))
structures = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=5),
    max_leaves=25,
)


def _check(text: str, name: str = "f.yaml") -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_text(text, encoding="utf-8")
        try:
            validate_file(path)
        except SchemaError as exc:
            assert exc.problems and all(isinstance(p, str) and "\n" not in p for p in exc.problems), exc.problems


@settings(max_examples=int(150 * SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structures)
def test_random_structures_give_schema_errors_only(data):
    _check(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=int(100 * SCALE), deadline=None)
@given(st.text(max_size=80))
def test_random_text_gives_schema_errors_only(text):
    _check(text)


def _mutations(node, path=()):
    """Every (path, leaf) of a parsed file."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _mutations(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _mutations(v, path + (i,))
    yield path, node


def _set(node, path, value):
    if not path:
        return value
    node[path[0]] = _set(node[path[0]], path[1:], value)
    return node


SEEDS = {p.name: yaml.safe_load(p.read_text()) for p in [SCENARIOS / "systems" / "meridian.yaml",
                                                          SCENARIOS / "systems" / "relay.yaml",
                                                          SCENARIOS / "plans" / "baseline.yaml"]}


@settings(max_examples=int(100 * SCALE), deadline=None)
@given(st.sampled_from(sorted(SEEDS)), st.data(), scalars | structures)
def test_one_bad_value_in_a_real_file_gives_schema_errors_only(name, data, value):
    import copy

    doc = copy.deepcopy(SEEDS[name])
    paths = [p for p, _ in _mutations(doc) if p]
    path = data.draw(st.sampled_from(paths))
    _check(yaml.safe_dump(_set(doc, path, value), allow_unicode=True), name)
