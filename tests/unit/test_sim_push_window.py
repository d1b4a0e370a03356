"""The simulator's push window is Pub/Sub's (surgesim.pubsub_push, the live bridge's model
too): it starts at 3, grows by one per success back within a second, and slow successes
do not grow it. A push consumer that is slow from the start is held to 3 requests in
flight however many instances it has; a fast one keeps up with its topic."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from surgesim.pubsub_push import INITIAL_WINDOW, PushWindow
from surgesim.schema import load_experiment
from surgesim.sim.engine import Engine


def _run(tmp_path: Path, handler: str) -> dict:
    (tmp_path / "s.yaml").write_text(textwrap.dedent(f"""
        name: s
        topics: [{{name: jobs}}]
        subscriptions:
          - {{name: jobs-sub, topic: jobs, consumer: worker, delivery: push, ack_deadline: 60s}}
        services:
          - name: api
            routes:
              - {{name: submit, path: /submit, steps: [{{cpu: 1ms}}, {{publish: {{topic: jobs}}}}]}}
          - name: worker
            steps: [{{sleep: {handler}}}]
        """))
    (tmp_path / "x.yaml").write_text(textwrap.dedent("""
        name: x
        system: s.yaml
        duration: 2m
        traffic:
          sources:
            - {name: submits, rate: 5, request: {service: api, route: submit}}
        """))
    return Engine(load_experiment(tmp_path / "x.yaml"), seed=1).run().totals()["subscriptions"]["jobs-sub"]


def test_a_consumer_slower_than_a_second_stays_at_the_initial_window(tmp_path):
    sub = _run(tmp_path, "2s")
    # 3 requests of 2 s in flight: 1.5 acks/s against 5 published/s
    assert INITIAL_WINDOW == 3
    assert sub["published"] == pytest.approx(600, rel=0.15)
    assert sub["acked"] == pytest.approx(120 * INITIAL_WINDOW / 2.0, rel=0.1)
    assert sub["backlog"] > 0.6 * sub["published"]


def test_a_fast_consumer_opens_the_window_and_keeps_up(tmp_path):
    sub = _run(tmp_path, "800ms")  # 4 in flight needed at 5/s: above the initial 3, so it must grow
    assert sub["backlog"] <= 10 and sub["acked"] >= sub["published"] - 10


def test_slow_successes_neither_grow_nor_shrink_and_failures_halve():
    w = PushWindow(maximum=1000)
    w.grow(29)
    assert w.limit == 32
    for _ in range(10):
        w.on_success(2.0)
    assert w.limit == 32
    w.on_failure()
    assert w.limit == 16
