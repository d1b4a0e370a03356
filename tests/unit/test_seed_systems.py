"""Every file under scenarios/ validates, and the two seed systems added here say what
their scenarios promise (rates, jobs, DLQs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from surgesim.schema import load_experiment, load_plan, load_system, validate_file
from surgesim.sim import traffic as tr

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
# *.workflow.yaml are Google Workflows definitions a system file points at (docs/workflows.md);
# *.space.yaml are `surgesim optimize` search spaces (tests/unit/test_optimize.py reads them)
FILES = sorted(p.relative_to(SCENARIOS).as_posix() for p in SCENARIOS.rglob("*.yaml")
               if not p.name.endswith((".workflow.yaml", ".space.yaml")))
WORKFLOWS = sorted(SCENARIOS.rglob("*.workflow.yaml"))


def test_the_seed_files_are_all_there():
    for name in ("systems/meridian.yaml", "systems/dogfinder.yaml", "systems/relay.yaml", "systems/embeddings.yaml",
                 "plans/relay.yaml", "plans/embeddings.yaml", "relay_jobs.yaml", "embeddings_backfill.yaml"):
        assert name in FILES


@pytest.mark.parametrize("name", FILES)
def test_every_scenario_file_validates(name):
    kind, model = validate_file(SCENARIOS / name)
    expected = "system" if name.startswith("systems/") else "plan" if name.startswith("plans/") else "scenario"
    assert kind == expected, f"{name} was read as a {kind} file"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_definition_validates(path):
    from surgesim.workflows import load

    assert "main" in load(path).subworkflows


def test_plans_fit_the_systems_their_scenarios_name():
    checked = set()
    for name in FILES:
        if "/" in name:
            continue
        exp = load_experiment(SCENARIOS / name)
        if exp.plan_path is not None:
            load_plan(exp.plan_path, exp.system)  # cross-checked against its system
            checked.add(exp.plan_path.name)
    assert {"relay.yaml", "embeddings.yaml"} <= checked


def test_relay_every_push_subscription_has_a_held_dlq_and_the_starter_polls():
    system = load_system(SCENARIOS / "systems" / "relay.yaml")
    held = {s.topic for s in system.subscriptions if s.consumer is None}
    for s in system.subscriptions:
        if s.consumer is not None:
            assert s.dead_letter is not None and s.dead_letter.topic in held
    kinds = [st.kind for st in system.service("relay-start").steps]
    assert kinds.index("bigquery") < kinds.index("poll")
    job = next(st.spec for st in system.service("relay-start").steps if st.kind == "bigquery")
    assert job.op == "job" and job.duration.p50 == 180 and job.duration.p99 == 1500
    poll = next(st.spec for st in system.service("relay-start").steps if st.kind == "poll")
    assert poll.every == 60 and any(s.topic == poll.topic and s.consumer == "relay-status" for s in system.subscriptions)


def test_relay_jobs_rates_and_burst():
    exp = load_experiment(SCENARIOS / "relay_jobs.yaml")
    src = exp.scenario.traffic.sources[0]
    assert tr.source_rate(exp, src, 10 * 60) == pytest.approx(3 / 60)
    assert tr.source_rate(exp, src, 47 * 60) == pytest.approx(1.0)
    total = tr.expected_counts(exp, src, 0, 10, 720).sum()
    # 2 h at 3/min plus a 5-minute burst at 60/min with 30 s ramps: 360 + 57 * 4.5
    assert total == pytest.approx(360 + 57 * 4.5, rel=0.01)


def test_embeddings_backfill_starts_the_sharded_job_once():
    exp = load_experiment(SCENARIOS / "embeddings_backfill.yaml")
    (src,) = exp.scenario.traffic.sources
    assert src.kind == "once" and src.at == 0 and src.job == "embed-backfill"
    job = exp.system.jobs[0]
    assert job.items % job.tasks == 0 and (job.items // job.tasks) % job.batch_size == 0
    assert [st.kind for st in job.steps] == ["firestore", "cpu", "call", "vector"]
    api = exp.system.api("embedding-api")
    batches = job.items / job.batch_size
    # The API's rate limit bounds the backfill from below; it must fit the scenario.
    assert batches / api.rate_limit < exp.scenario.duration
    assert exp.plan.jobs["embed-backfill"].parallelism == 10
    assert np.isclose(tr.source_rate(exp, src, 0), 0.0)
