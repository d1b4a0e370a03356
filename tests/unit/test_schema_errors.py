"""Common mistakes in the three files each give one line naming the file, the line and
the field path, and saying what is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from surgesim.schema import SchemaError, load_experiment, validate_file

SYSTEM = """\
name: shop
topics:
  - {name: orders}
  - {name: orders.dlq}
subscriptions:
  - name: orders-worker
    topic: orders
    consumer: worker
    ack_deadline: 30s
    filter: 'attributes.kind = "order"'
    dead_letter: {topic: orders.dlq, max_attempts: 5}
  - {name: orders-dlq-hold, topic: orders.dlq}
services:
  - name: api
    routes:
      - name: place
        path: /orders
        steps:
          - cpu: 2ms
          - publish: {topic: orders}
  - name: worker
    steps:
      - firestore: {op: write, collection: orders}
stores:
  firestore:
    - {name: orders}
external_apis:
  - {name: payments, latency: {p50: 100ms, p99: 400ms}}
"""

PLAN = """\
name: small
services:
  api: {min_instances: 1, max_instances: 10}
"""

SCENARIO = """\
name: lunch
system: system.yaml
plan: plan.yaml
duration: 1h
traffic:
  sources:
    - {name: orders, rate: 20/s, request: {service: api, route: place}}
  waves:
    - {name: rush, at: 10m, duration: 5m, multiply: {orders: 3}}
faults:
  - {kind: dependency_latency, target: payments, at: 20m, duration: 5m, latency: 2s}
slos:
  - p99(latency.api.place) < 200ms
  - final(dlq.orders-worker) == 0
"""


def write(tmp_path: Path, system=SYSTEM, plan=PLAN, scenario=SCENARIO) -> Path:
    (tmp_path / "system.yaml").write_text(system)
    (tmp_path / "plan.yaml").write_text(plan)
    (tmp_path / "scenario.yaml").write_text(scenario)
    return tmp_path / "scenario.yaml"


def test_the_base_files_are_valid(tmp_path):
    exp = load_experiment(write(tmp_path))
    assert exp.system.name == "shop" and exp.plan.name == "small" and len(exp.scenario.slos) == 2


def sub(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# (which file, old text, new text, expected "file:line: path: message" pattern)
MISTAKES = {
    "yaml syntax": ("system", "  - {name: orders}\n", "  - {name: orders\n",
                    r"(^|/)system\.yaml:\d+: YAML syntax error: "),
    "unknown key": ("system", "    ack_deadline: 30s", "    ack_dedline: 30s",
                    r"(^|/)system\.yaml:9: subscriptions\[0\]\.ack_dedline: unknown field \(did you mean 'ack_deadline'\?\)$"),
    "wrong type": ("system", "  - {name: orders}\n", "  - {name: orders, message_bytes: lots}\n",
                   r"(^|/)system\.yaml:3: topics\[0\]\.message_bytes: input should be a valid integer.*got 'lots'$"),
    "dead-letter attempts out of range": ("system", "max_attempts: 5}", "max_attempts: 2}",
                                          r"(^|/)system\.yaml:11: subscriptions\[0\]\.dead_letter\.max_attempts: must be 5\.\.100, got 2$"),
    "ack deadline too short": ("system", "ack_deadline: 30s", "ack_deadline: 5s",
                               r"(^|/)system\.yaml:9: subscriptions\[0\]\.ack_deadline: must be 10s\.\.10m, got 5s$"),
    "undefined topic": ("system", "    topic: orders\n", "    topic: order\n",
                        r"(^|/)system\.yaml:7: subscriptions\[0\]\.topic: topic 'order' is not declared under topics \(did you mean 'orders'\?\)$"),
    "undefined dlq topic": ("system", "{topic: orders.dlq, max_attempts", "{topic: orders.dead, max_attempts",
                            r"(^|/)system\.yaml:11: subscriptions\[0\]\.dead_letter\.topic: topic 'orders\.dead' is not declared under topics \(did you mean 'orders\.dlq'\?\)$"),
    "dlq topic without subscription": ("system", "  - {name: orders-dlq-hold, topic: orders.dlq}\n", "",
                                       r"(^|/)system\.yaml:11: subscriptions\[0\]\.dead_letter\.topic: topic 'orders\.dlq' has no subscription"),
    "bad filter": ("system", "'attributes.kind = \"order\"'", "'attributes.kind == \"order\"'",
                   r"(^|/)system\.yaml:10: subscriptions\[0\]\.filter: invalid filter: "),
    "duplicate key": ("system", "    ack_deadline: 30s\n", "    ack_deadline: 30s\n    ack_deadline: 60s\n",
                      r"(^|/)system\.yaml:10: subscriptions\[0\]\.ack_deadline: key appears twice$"),
    "undefined collection": ("system", "{op: write, collection: orders}", "{op: write, collection: order}",
                             r"(^|/)system\.yaml:23: services\[1\]\.steps\[0\]\.firestore\.collection: collection 'order' is not declared under stores\.firestore \(did you mean 'orders'\?\)$"),
    "publish to unknown topic": ("system", "publish: {topic: orders}", "publish: {topic: invoices}",
                                 r"(^|/)system\.yaml:20: services\[0\]\.routes\[0\]\.steps\[1\]\.publish\.topic: topic 'invoices' is not declared under topics$"),
    "two step kinds": ("system", "          - cpu: 2ms\n", "          - {cpu: 2ms, sleep: 1ms}\n",
                       r"(^|/)system\.yaml:19: services\[0\]\.routes\[0\]\.steps\[0\]: a step has exactly one of .*got cpu, sleep$"),
    "latency p99 below p50": ("system", "{p50: 100ms, p99: 400ms}", "{p50: 100ms, p99: 40ms}",
                              r"(^|/)system\.yaml:28: external_apis\[0\]\.latency: p99 \(40ms\) must be >= p50 \(100ms\)$"),
    "bad duration": ("scenario", "duration: 1h", "duration: an hour",
                     r"(^|/)scenario\.yaml:4: duration: expected a duration such as 250ms, 5s, 9m or 1h30m, got 'an hour'$"),
    "bad rate": ("scenario", "rate: 20/s", "rate: 20 per second",
                 r"(^|/)scenario\.yaml:7: traffic\.sources\[0\]\.rate: expected a rate such as 1600/s"),
    "wave on unknown source": ("scenario", "multiply: {orders: 3}", "multiply: {order: 3}",
                               r"(^|/)scenario\.yaml:9: traffic\.waves\[0\]\.multiply\.order: source 'order' is not under traffic\.sources \(did you mean 'orders'\?\)$"),
    "fault target unknown": ("scenario", "target: payments", "target: payment",
                             r"(^|/)scenario\.yaml:11: faults\[0\]\.target: 'payment' is not an external_api of system 'shop' \(did you mean 'payments'\?\)$"),
    "ramp longer than the fault": ("scenario", "duration: 5m, latency: 2s}", "duration: 5m, ramp: 10m, latency: 2s}",
                                   r"(^|/)scenario\.yaml:11: faults\[0\]: ramp: 10m is longer than the fault's duration \(5m\)$"),
    "ramp on a fault that does not ramp": ("scenario", "{kind: dependency_latency, target: payments, at: 20m, duration: 5m, latency: 2s}",
                                           "{kind: dependency_errors, target: payments, at: 20m, duration: 5m, ramp: 1m, error_rate: 0.5}",
                                           r"(^|/)scenario\.yaml:11: faults\[0\]: ramp: only dependency_latency ramps \(not dependency_errors\)$"),
    "slo unknown entity": ("scenario", "final(dlq.orders-worker)", "final(dlq.orders-workers)",
                           r"(^|/)scenario\.yaml:14: slos\[1\]: dlq\.orders-workers: no such subscription in system 'shop'$"),
    "slo syntax": ("scenario", "p99(latency.api.place) < 200ms", "p99 latency.api.place < 200ms",
                   r"(^|/)scenario\.yaml:13: slos\[0\]: expected FUNC\(METRIC\.ENTITY\) OP VALUE"),
    "request to unknown route": ("scenario", "route: place}", "route: buy}",
                                 r"(^|/)scenario\.yaml:7: traffic\.sources\[0\]\.request\.route: service 'api' has no route 'buy'$"),
    "plan names unknown service": ("plan", "  api: {", "  apii: {",
                                   r"(^|/)plan\.yaml:3: services\.apii: service 'apii' is not in system 'shop' \(did you mean 'api'\?\)$"),
    "min above max instances": ("plan", "{min_instances: 1, max_instances: 10}", "{min_instances: 12, max_instances: 10}",
                                r"(^|/)plan\.yaml:3: services\.api: min_instances \(12\) must be <= max_instances \(10\)$"),
    "plan concurrency out of range": ("plan", "max_instances: 10}", "max_instances: 10, concurrency: 5000}",
                                      r"(^|/)plan\.yaml:3: services\.api\.concurrency: must be 1\.\.1000, got 5000$"),
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_mistake_gives_one_line_naming_file_and_field(tmp_path, name):
    which, old, new, pattern = MISTAKES[name]
    files = {"system": SYSTEM, "plan": PLAN, "scenario": SCENARIO}
    files[which] = sub(files[which], old, new)
    path = write(tmp_path, **files)
    with pytest.raises(SchemaError) as info:
        load_experiment(path)
    problems = info.value.problems
    assert len(problems) == 1, problems
    assert re.search(pattern, problems[0]), problems[0]


def test_at_least_fifteen_distinct_mistakes_are_covered():
    assert len(MISTAKES) >= 15


def test_validate_file_reports_problems_of_each_kind_of_file(tmp_path):
    write(tmp_path, system=sub(SYSTEM, "ack_deadline: 30s", "ack_deadline: 11m"))
    with pytest.raises(SchemaError, match=r"system\.yaml:9: subscriptions\[0\]\.ack_deadline: must be 10s\.\.10m, got 11m"):
        validate_file(tmp_path / "system.yaml")
    (tmp_path / "p2.yaml").write_text("name: x\nservices: {api: {cpu: 20}}\n")
    with pytest.raises(SchemaError, match=r"p2\.yaml:2: services\.api\.cpu: must be 0\.08\.\.8, got 20"):
        validate_file(tmp_path / "p2.yaml")


def test_missing_system_file_is_named(tmp_path):
    write(tmp_path, scenario=sub(SCENARIO, "system: system.yaml", "system: systems.yaml"))
    with pytest.raises(SchemaError, match=r"scenario\.yaml:2: system: file 'systems\.yaml' not found next to scenario\.yaml"):
        load_experiment(tmp_path / "scenario.yaml")
