"""`surgesim sim` warns about routes and services that traffic reached but that declare no
steps (their handlers would take 0 ms unnoticed), one line each, naming them."""

from __future__ import annotations

import textwrap
from pathlib import Path

from click.testing import CliRunner

from surgesim.cli import cli

SYSTEM = """\
name: shop
project: shop-local
topics:
  - {name: work}
  - {name: quiet}
subscriptions:
  - {name: work-sub, topic: work, consumer: worker, delivery: pull}
  - {name: quiet-sub, topic: quiet, consumer: idle, delivery: pull}
services:
  - name: api
    routes:
      - {name: hello, path: /hello}
      - {name: slow, path: "/items/{id}", steps: [{cpu: 5ms}]}
      - {name: unused, path: /unused}
  - {name: worker}
  - {name: idle}
  - {name: busy, steps: [{cpu: 2ms}]}
"""


def scenario(tmp: Path, sources: str) -> Path:
    (tmp / "system.yaml").write_text(SYSTEM)
    (tmp / "s.yaml").write_text("name: s\nsystem: system.yaml\nseed: 3\nduration: 60s\ntraffic:\n  sources:\n"
                                + textwrap.indent(textwrap.dedent(sources), "    "))
    return tmp / "s.yaml"


def test_each_reached_stepless_route_and_service_is_named_once(tmp_path):
    path = scenario(tmp_path, """\
        - {name: a, rate: 5/s, request: {service: api, route: hello}}
        - {name: b, rate: 5/s, request: {service: api, route: slow}}
        - {name: c, rate: 2/s, publish: {topic: work}}
        """)
    res = CliRunner().invoke(cli, ["sim", str(path), "--out", str(tmp_path / "run"), "--no-report"])
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, res.stderr
    route, service = warnings
    assert route.startswith("warning: route api.hello has no steps: the simulator answered its ") and " 0 ms" in route
    n = int(route.split("answered its ")[1].split()[0])
    assert 200 <= n <= 400, route  # 5/s for 60 s
    assert service.startswith("warning: service worker has no steps") and "from work-sub" in service, service
    # what no traffic reaches (api.unused, idle) and what has steps (api.slow, busy) stay quiet
    for quiet in ("api.unused", "idle", "api.slow", "busy"):
        assert quiet not in res.stderr


def test_no_warning_when_every_reached_handler_has_steps(tmp_path):
    path = scenario(tmp_path, """\
        - {name: b, rate: 5/s, request: {service: api, route: slow}}
        """)
    res = CliRunner().invoke(cli, ["sim", str(path), "--out", str(tmp_path / "run"), "--no-report"])
    assert res.exit_code == 0, res.output
    assert "warning:" not in res.stderr
