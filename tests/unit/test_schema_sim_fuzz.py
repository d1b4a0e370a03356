"""Every set of files `validate` accepts runs in the simulator without a traceback or a
hang (issue 20). The files are generated from the schema itself: each field's strategy
comes from its pydantic annotation and bounds (in_range, durations, rates, literals,
patterns), so a new field or a changed bound is fuzzed without editing this test. Only the
skeleton is fixed: a small pool of names, so that cross-references (a subscription's topic,
a step's collection, a wave's source) often resolve and most examples get past validation
into the simulator. Durations are short (a few seconds of virtual time); rates, counts,
latencies and timeouts range over everything the schema allows, extremes included.

Deterministic: derandomized, no example database, so CI sees the same examples each run.
SURGESIM_FUZZ_SCALE=10 runs ten times the examples."""

from __future__ import annotations

import math
import os
import time
import types
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from surgesim.schema import SchemaError, load_experiment
from surgesim.schema import plan as plan_models
from surgesim.schema import scenario as scenario_models
from surgesim.schema import system as system_models
from surgesim.schema.common import Latency, parse_duration
from surgesim.schema.limits import MAX_DURATION_S, MAX_RATE_PER_S
from surgesim.sim.guard import Stalled
from surgesim.sim.output import write_run
from surgesim.sim.split import run_experiment

SCALE = float(os.environ.get("SURGESIM_FUZZ_SCALE", "1"))

# ---- the name pool: what the generated files declare and refer to -----------------------

TOPICS = ["orders", "events", "orders.dlq"]
SERVICES = ["api", "worker"]
APIS = ["pay"]
JOBS = ["sweep"]
WORKFLOWS = ["saga"]
COLLECTIONS = ["docs"]
TABLES = ["ds.rows"]
BUCKETS = ["bkt"]
ROUTES = ["place", "fetch"]
SOURCES = ["a", "b"]
SUBS = ["orders-sub", "events-sub", "dlq-hold"]
FILTERS = [None, 'attributes.kind = "x"', "hasPrefix(attributes.kind, \"a\")"]

# Reference and free-text fields: by field name, everywhere in the three models.
BY_NAME: dict[str, st.SearchStrategy] = {
    "topic": st.sampled_from(TOPICS),
    "collection": st.sampled_from(COLLECTIONS),
    "table": st.sampled_from(TABLES),
    "bucket": st.sampled_from(BUCKETS),
    "api": st.sampled_from(APIS + SERVICES),
    "call": st.sampled_from(APIS + SERVICES),
    "consumer": st.sampled_from(SERVICES + WORKFLOWS),
    "target": st.sampled_from(SERVICES + APIS + WORKFLOWS),
    "trigger": st.sampled_from(TOPICS),
    "service": st.sampled_from(SERVICES),
    "route": st.sampled_from(ROUTES),
    "job": st.sampled_from(JOBS),
    "workflow": st.sampled_from(WORKFLOWS),
    "curve": st.just("day"),
    "filter": st.sampled_from(FILTERS),
    "matching": st.sampled_from(FILTERS[1:]),
    "compensate": st.none(),
    "description": st.just(""),
    "attributes": st.dictionaries(st.sampled_from(["kind", "k"]), st.sampled_from(["x", "a", "$kind"]), max_size=2),
    "partition_field": st.none(),
    "database": st.just("(default)"),
    "push_path": st.just("/push"),
    # live-mode only: not simulated
    "app": st.none(), "command": st.none(), "url": st.none(), "fake": st.none(),
    "service_account": st.none(), "invokers": st.none(),
    "system": st.just("system.yaml"), "plan": st.just("plan.yaml"),
    "function": st.none(), "hook": st.none(), "files": st.none(),
    # the live generators' pools and flows: plain rate sources to the simulator, their
    # own unit tests cover them (tests/unit/test_loadtests_pools.py)
    "let": st.just({}), "capture": st.just({}), "take": st.none(), "put": st.none(), "flow": st.none(),
    "prepare": st.just([]), "source": st.none(), "content_type": st.none(),
}


def _annotated(field, required: bool = False):
    tp = field.annotation
    if required and typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return typing.Annotated[(tp, *field.metadata)] if field.metadata else tp


def _seconds_of(text: str) -> float:
    return float(text[:-1])


def _ordered(mapping: dict, lo: str, hi: str) -> dict:
    """Swap two duration fields so that lo <= hi (a model rule, not a bound)."""
    if lo in mapping and hi in mapping and mapping[lo] is not None and mapping[hi] is not None:
        a, b = sorted((mapping[lo], mapping[hi]), key=_seconds_of)
        mapping = dict(mapping, **{lo: a, hi: b})
    return mapping


def _bounds(meta) -> tuple[float, float] | None:
    """(lo, hi) of an `in_range` validator, read from its closure."""
    func = getattr(meta, "func", None)
    code = getattr(func, "__code__", None)
    if code is None or not {"lo", "hi"} <= set(code.co_freevars):
        return None
    cells = dict(zip(code.co_freevars, (c.cell_contents for c in func.__closure__)))
    return float(cells["lo"]), float(cells["hi"])


def _number(lo: float, hi: float) -> st.SearchStrategy:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False) | st.sampled_from([lo, hi])


def seconds(x: float) -> str:
    """A duration as the files write it (no exponent: `1e-05s` is not a duration)."""
    return (f"{x:.6f}".rstrip("0").rstrip(".") or "0") + "s"


def strategy_for(tp, name: str = "", bounds: tuple[float, float] | None = None, min_size: int = 0) -> st.SearchStrategy:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        kinds = set()
        for meta in args[1:]:
            min_size = getattr(meta, "min_length", None) or min_size
            bounds = _bounds(meta) or bounds
            func = getattr(meta, "func", None)
            if func is not None:
                kinds.add(func.__name__)
            pattern = getattr(meta, "pattern", None)
            if pattern:
                return st.from_regex(pattern, fullmatch=True).filter(lambda s: len(s) < 40)
        if "parse_duration" in kinds:
            lo, hi = bounds or (0.0, MAX_DURATION_S)
            return _number(lo, min(hi, MAX_DURATION_S)).map(seconds)
        if "parse_rate" in kinds:
            lo, hi = bounds or (0.0, MAX_RATE_PER_S)
            return _number(lo, hi).map(lambda r: f"{r!r}/s")
        if "parse_clock" in kinds:
            return st.tuples(st.integers(0, 23), st.integers(0, 59)).map(lambda hm: f"{hm[0]:02d}:{hm[1]:02d}")
        if "_pubsub_name" in kinds:
            return st.sampled_from(TOPICS)
        if "_service_id" in kinds:
            return st.sampled_from(SERVICES)
        if "latency" in kinds:
            return LATENCY
        if "_check_filter" in kinds:
            return st.sampled_from(FILTERS)
        return strategy_for(args[0], name, bounds, min_size)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([st.none() if a is type(None) else strategy_for(a, name, bounds) for a in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(strategy_for(args[0], name), min_size=min_size, max_size=max(3, min_size))
    if origin is dict:
        return st.dictionaries(st.sampled_from(SERVICES + SUBS + SOURCES), strategy_for(args[1], name), max_size=2)
    if origin is tuple:
        return st.tuples(*(strategy_for(a, name) for a in args))
    if tp is typing.Any:  # free-form (payload templates): not what the simulator reads
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        lo, hi = bounds or (0, 10**6)
        return st.integers(int(lo), int(min(hi, 2**62)))
    if tp is float:
        lo, hi = bounds or (0.0, 1e6)
        return _number(lo, hi)
    if tp is str:
        return st.sampled_from(["", "x"])
    if tp is Latency:
        return LATENCY
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return from_model(tp)
    raise NotImplementedError(f"no strategy for {tp!r} ({name}): add one above")


def from_model(model: type[BaseModel], **fixed: st.SearchStrategy) -> st.SearchStrategy:
    """A mapping for `model`: required fields always, optional ones sometimes, each value
    drawn from the field's annotation (or `fixed`, or BY_NAME for references)."""
    required, optional = {}, {}
    for name, field in model.model_fields.items():
        if name in fixed:
            strat = fixed[name]
        elif name in BY_NAME:
            strat = BY_NAME[name]
        else:
            strat = strategy_for(_annotated(field), name)
        (required if field.is_required() or name in fixed else optional)[name] = strat
    return st.fixed_dictionaries(required, optional=optional)


def _latency() -> st.SearchStrategy:
    """Every form a latency takes (Latency's docstring): the fields of each form come from
    the same duration strategy; a mapping of Latency's fields drawn independently would
    mix forms (cv with p99, k without a dist) and be refused every time."""
    dur = st.floats(0, 2).map(seconds) | st.sampled_from(["0s", "1ms", "30s"])
    pos = st.floats(0.001, 2).map(seconds)
    pair = st.tuples(dur, dur).map(lambda ab: tuple(sorted(ab, key=parse_duration)))
    return st.one_of(
        dur,
        st.fixed_dictionaries({"p50": dur}),
        pair.map(lambda ab: {"p50": ab[0], "p99": ab[1]}),
        st.fixed_dictionaries({"dist": st.just("constant"), "value": dur}),
        st.fixed_dictionaries({"dist": st.just("exponential"), "mean": pos}),
        st.fixed_dictionaries({"dist": st.just("gamma"), "mean": pos, "cv": st.floats(0.05, 4)}),
        st.fixed_dictionaries({"dist": st.just("erlang"), "k": st.integers(1, 20), "mean": pos}),
        pair.map(lambda ab: {"dist": "uniform", "min": ab[0], "max": ab[1]}),
        st.tuples(pos, pos).map(lambda ab: tuple(sorted(ab, key=parse_duration))).map(
            lambda ab: {"dist": "lognormal", "p50": ab[0], "p99": ab[1]}),
        st.lists(dur, min_size=1, max_size=5).map(lambda xs: {"dist": "empirical", "samples": xs}),
    )


LATENCY = st.deferred(_latency)


def _step() -> st.SearchStrategy:
    kinds = {"cpu": LATENCY, "sleep": LATENCY}
    for kind, model in system_models._STEP_KINDS.items():
        if model is not None:
            kinds[kind] = from_model(model)
    return st.one_of([v.map(lambda spec, k=k: {k: spec}) for k, v in kinds.items()])


STEPS = st.lists(_step(), max_size=3)
# a workflow step calls a service or an API (at most 30m), or runs the job (its wait up to a year)
WORKFLOW_STEP = st.one_of(
    from_model(system_models.WorkflowStep, call=st.sampled_from(APIS + SERVICES), run_job=st.none(),
               wait=st.just(True), timeout=st.floats(0.001, 1800).map(seconds)),
    from_model(system_models.WorkflowStep, run_job=st.sampled_from(JOBS), call=st.none()))


def _fault() -> st.SearchStrategy:
    """A fault of each kind with the fields that kind needs."""
    fields = scenario_models.Fault.model_fields
    return st.one_of([
        from_model(scenario_models.Fault, kind=st.just(kind), at=st.floats(0, 1).map(seconds),
                   **{f: strategy_for(_annotated(fields[f], True), f) if f not in BY_NAME else BY_NAME[f]
                      for f in needs if f != "target"},
                   **({"target": st.sampled_from(APIS if kind.startswith("dependency_") else SERVICES)}
                      if "target" in needs else {}),
                   # only a latency ramps; a ramp no longer than the window the rest of the time
                   ramp=st.floats(0, 1).map(seconds) if kind == "dependency_latency" else st.just("0s"))
        for kind, needs in scenario_models._FAULT_NEEDS.items()])


def _subscription(name: str, topic: str) -> st.SearchStrategy:
    fields = system_models.Subscription.model_fields
    dead_letter = (from_model(system_models.DeadLetter, topic=st.just("orders.dlq")) | st.none()
                   if topic != "orders.dlq" else st.none())
    base = dict(name=st.just(name), topic=st.just(topic), dead_letter=dead_letter, retry=from_model(system_models.RetryPolicy).map(
        lambda r: _ordered({"min_backoff": "10s", "max_backoff": "600s", **r}, "min_backoff", "max_backoff")) | st.none())
    return st.one_of(
        from_model(system_models.Subscription, delivery=st.just("pull"), bigquery=st.none(), **base),
        from_model(system_models.Subscription, delivery=st.just("push"), bigquery=st.none(),
                   consumer=st.sampled_from(SERVICES), **base),
        from_model(system_models.Subscription, delivery=st.just("bigquery"), consumer=st.none(),
                   bigquery=strategy_for(_annotated(fields["bigquery"], True)), **base),
    )


SLOS = st.lists(st.builds(lambda f, m, e, op, v: f"{f}({m}.{e}) {op} {v}",
                          st.sampled_from(scenario_models.SLO_FUNCS), st.sampled_from(scenario_models.SLO_METRICS),
                          st.sampled_from(SUBS + SERVICES + ["api.place"]), st.sampled_from(["<", "<=", ">", ">=", "=="]),
                          st.sampled_from(["0", "1", "100ms", "5s"])), max_size=2)

SYSTEM = from_model(
    system_models.System,
    name=st.just("fuzz"),
    topics=st.tuples(*(from_model(system_models.Topic, name=st.just(t)) for t in TOPICS)).map(list),
    subscriptions=st.tuples(*(_subscription(s, t) for s, t in zip(SUBS, TOPICS))).map(list),
    services=st.tuples(*(from_model(system_models.Service, name=st.just(s), steps=STEPS, routes=st.tuples(
        *(from_model(system_models.Route, name=st.just(r), path=st.just(f"/{r}"), steps=STEPS) for r in ROUTES)
    ).map(list)) for s in SERVICES)).map(list),
    jobs=st.lists(from_model(system_models.Job, name=st.just("sweep"), steps=STEPS), min_size=1, max_size=1),
    external_apis=st.lists(from_model(system_models.ExternalApi, name=st.just("pay")), min_size=1, max_size=1),
    workflows=st.lists(from_model(system_models.Workflow, name=st.just("saga"), compensations=st.just([]),
                                  steps=st.lists(WORKFLOW_STEP, min_size=1, max_size=3)),
                       min_size=1, max_size=1),
    triggers=st.lists(st.one_of(  # each kind with its own source fields (the model validator's rule)
        from_model(system_models.Trigger, name=st.just("on-docs"), target=st.sampled_from(SERVICES),
                   collection=st.just("docs"), document=st.none(), topic=st.none(), bucket=st.none(),
                   events=st.none(), dead_letter=st.none()),
        from_model(system_models.Trigger, name=st.just("on-docs"), target=st.sampled_from(SERVICES),
                   bucket=st.just("bkt"), collection=st.none(), document=st.none(), topic=st.none(),
                   events=st.none(), dead_letter=st.none()),
        from_model(system_models.Trigger, name=st.just("on-docs"), target=st.sampled_from(SERVICES),
                   topic=st.sampled_from(TOPICS), collection=st.none(), document=st.none(), bucket=st.none(),
                   events=st.none())), max_size=1),
    stores=from_model(
        system_models.Stores,
        firestore=st.just([{"name": "docs"}]), storage=st.just([{"name": "bkt"}]),
        bigquery=st.just([{"dataset": "ds", "table": "rows", "columns": [{"name": "x", "type": "STRING"}]}])),
)

PLAN = from_model(plan_models.Plan, name=st.just("fuzz"), routes=st.none(), steps=st.none(),
                  services=st.dictionaries(st.sampled_from(SERVICES), from_model(
                      plan_models.ServicePlan, routes=st.none(), steps=st.none()).map(
                      lambda p: dict(p, max_instances=max(p.get("max_instances", 100), p.get("min_instances", 0)))),
                      max_size=2),
                  subscriptions=st.dictionaries(st.sampled_from(SUBS), from_model(plan_models.SubscriptionPlan), max_size=2),
                  jobs=st.dictionaries(st.sampled_from(JOBS), from_model(plan_models.JobPlan), max_size=1),
                  debounce=st.dictionaries(st.sampled_from(SERVICES), strategy_for(
                      plan_models.Plan.model_fields["debounce"].annotation).map(lambda d: next(iter(d.values()), "1s")),
                      max_size=1))

HORIZON_S = 5.0
"""Virtual seconds each generated scenario runs: the test is about crashes and hangs."""


def _source() -> st.SearchStrategy:
    """A source of each kind, sending to one target: the combinations the model validator
    allows (the values inside still come from the field annotations)."""
    none = st.none()
    targets = ("publish", "request", "job", "workflow", "firestore", "storage")
    writes = {  # the write sources: the op and its fields go together (the model validator's rule)
        "firestore": st.fixed_dictionaries({"collection": st.just("docs"), "document": st.just("d{{ seq }}"),
                                             "op": st.sampled_from(["create", "set", "update"]),
                                             "data": st.just({"n": "{{ seq }}"})})
        | st.fixed_dictionaries({"collection": st.just("docs"), "document": st.just("d{{ seq }}"),
                                 "op": st.just("delete")}),
        "storage": st.fixed_dictionaries({"bucket": st.just("bkt"), "object": st.just("o{{ seq }}"),
                                          "bytes": st.integers(0, 4096)}),
    }
    fields = scenario_models.Source.model_fields

    def required(name: str) -> st.SearchStrategy:
        return strategy_for(_annotated(fields[name], True), name)

    per_kind = [
        {"kind": st.just("fleet"), "vehicles": required("vehicles"), "ping_interval": required("ping_interval"),
         "rate": none, "per_day": none, "at": none},
        {"kind": st.just("rate"), "rate": required("rate"), "per_day": none, "vehicles": none, "ping_interval": none,
         "at": none},
        {"kind": st.just("rate"), "per_day": required("per_day"), "rate": none, "vehicles": none,
         "ping_interval": none, "at": none},
        {"kind": st.just("once"), "at": st.floats(0, HORIZON_S).map(seconds), "vehicles": none, "ping_interval": none,
         "rate": none, "per_day": none},
    ]
    out = []
    for fixed in per_kind:
        for target in targets:
            others = {t: none for t in targets if t != target}
            out.append(from_model(scenario_models.Source, name=st.sampled_from(SOURCES),
                                  **{target: writes[target] if target in writes else
                                     BY_NAME[target] if target in BY_NAME else required(target)}, **others, **fixed))
    return st.one_of(out)


SOURCE = _source()

SCENARIO = from_model(
    scenario_models.Scenario,
    name=st.just("fuzz"),
    duration=st.floats(1.0, HORIZON_S).map(seconds),
    slos=SLOS,
    live=st.just({}),
    checks=st.just({}),
    traffic=from_model(
        scenario_models.Traffic,
        curves=st.dictionaries(st.just("day"), from_model(scenario_models.Curve), min_size=1, max_size=1),
        sources=st.lists(SOURCE, min_size=1, max_size=2, unique_by=lambda s: s["name"]),
        waves=st.lists(from_model(scenario_models.Wave, at=st.floats(0, 2).map(seconds),
                                  duration=st.just("1s"),
                                  rates=st.dictionaries(st.sampled_from(SOURCES), strategy_for(
                                      scenario_models.Wave.model_fields["rates"].annotation).map(
                                      lambda d: next(iter(d.values()), "1/s")), max_size=1)).filter(
                           lambda w: w.get("rates") or w.get("multiply")),
                       max_size=1),
    ),
    faults=st.lists(_fault(), max_size=2),
)


def _write(tmp: Path, system: dict, plan: dict, scenario: dict) -> Path:
    for name, doc in (("system.yaml", system), ("plan.yaml", plan), ("scenario.yaml", scenario)):
        (tmp / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return tmp / "scenario.yaml"


@settings(max_examples=int(60 * SCALE), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(SYSTEM, PLAN, SCENARIO, st.booleans())
def test_every_accepted_file_set_runs_in_the_simulator(tmp_path_factory, system, plan, scenario, exact):
    tmp = tmp_path_factory.mktemp("fuzz")
    path = _write(tmp, system, plan, scenario)
    try:
        exp = load_experiment(path)
    except SchemaError as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)
        event("rejected by validate")
        return
    event("accepted: run in the simulator")
    try:
        eng = run_experiment(exp, exact=exact, split=False,
                             guard={"clock": time.monotonic, "max_wall_per_step_s": 60.0})
    except Stalled as exc:
        # The event-count guards are a clean end (exit 2); a wall-clock stop is a hang.
        assert "wall seconds" not in str(exc), f"{path}: {exc}"
        event("stalled cleanly")
        return
    summary = write_run(eng, tmp / "run", {"run_id": "fuzz", "engine": "sim"})
    assert summary["verdict"] in ("pass", "fail")
    assert all(math.isfinite(v) for v in _numbers(summary["totals"]) if isinstance(v, float))


def _numbers(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _numbers(v)
    else:
        yield node


def test_the_generator_reaches_the_simulator():
    """Generated file sets must often pass validation, or the property above tests little."""
    accepted = 0
    total = 0

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(SYSTEM, PLAN, SCENARIO)
    def count(system, plan, scenario):
        nonlocal accepted, total
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            total += 1
            try:
                load_experiment(_write(Path(d), system, plan, scenario))
                accepted += 1
            except SchemaError:
                pass

    count()
    # One in eight at least (alone this file accepts about half; 9 of 40 was seen inside
    # the whole suite, for a reason not yet found): enough that the simulator is reached.
    assert total >= 20 and accepted >= total // 8, (accepted, total)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q", "--hypothesis-show-statistics"])
