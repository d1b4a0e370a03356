"""Reading the three files: YAML with line numbers, one-line errors naming file, line and
field path, cross-references between files, and the resolved experiment (scenario +
system + plan) that both engines run."""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import yaml
from pydantic import BaseModel, ValidationError

from surgesim.schema.limits import scenario_limit_problems
from surgesim.schema.plan import Plan, ServicePlan
from surgesim.schema.scenario import Scenario
from surgesim.schema.system import Route, Step, System

Kind = Literal["system", "plan", "scenario"]
MODELS: dict[str, type] = {"system": System, "plan": Plan, "scenario": Scenario}


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 2**20
"""A system, plan or scenario file is at most 1 MiB (the largest seed system file
is 10 KB): checked before reading, so a huge file is refused in microseconds."""
MAX_NODES = 50_000
"""At most this many YAML nodes (keys, values, items; the largest seed system file has 916), counted while
parsing (before any node is built) and again after alias expansion."""
MAX_DEPTH = 64
_NODE_EVENTS = (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent, yaml.AliasEvent)


class SchemaError(ValueError):
    """One or more problems, each a line `file:line: field.path: what is wrong`."""

    def __init__(self, problems: list[str]):
        # One line per problem, whatever characters a key or value brought along.
        self.problems = [p.replace("\r", "\\r").replace("\n", "\\n") for p in problems]
        super().__init__("\n".join(self.problems))


# ---- YAML with positions --------------------------------------------------------------


class _Doc:
    """Parsed YAML plus a map from field path to line number."""

    def __init__(self, path: Path, shown: str | None = None):
        self.path = path
        # Errors name the file as the user gave it (folder included), not just its base name.
        self.name = shown if shown is not None else str(path)
        text = self._read()
        self._count_nodes(text)
        try:
            # One parse (libyaml when present) gives both the nodes, for line numbers, and
            # the data constructed from them.
            loader = _Loader(text)
            try:
                node = loader.get_single_node()
                self.data = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
        except yaml.YAMLError as exc:
            raise SchemaError([self._syntax(exc)]) from None
        except RecursionError:
            raise SchemaError([f"{self.name}: YAML nested too deeply"]) from None
        self.lines: dict[tuple, int] = {}
        self.duplicates: list[str] = []
        self._budget = MAX_NODES
        if node is not None:
            self._index(node, (), ())

    def _read(self) -> str:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                # Read one byte past the limit: a pipe or a growing file has no honest size.
                raw = f.read(MAX_BYTES + 1) if size <= MAX_BYTES else b""
        except FileNotFoundError:
            raise SchemaError([f"{self.name}: file not found"]) from None
        except OSError as exc:
            raise SchemaError([f"{self.name}: cannot read: {exc.strerror or exc}"]) from None
        if size > MAX_BYTES or len(raw) > MAX_BYTES:
            raise SchemaError([f"{self.name}: {max(size, len(raw)):,} bytes; a system, plan or scenario file "
                               f"may have at most {MAX_BYTES:,}"])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SchemaError([f"{self.name}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None

    def _syntax(self, exc: yaml.YAMLError) -> str:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return f"{self.name}{where}: YAML syntax error: {problem}"

    def _count_nodes(self, text: str) -> None:
        """Stream the parser's events and stop at the node or depth limit, before any node
        is built: a file of a million small items is refused after MAX_NODES events."""
        loader = _Loader(text)
        get_event = loader.get_event
        nodes = depth = 0
        try:
            while (event := get_event()) is not None:
                if isinstance(event, _NODE_EVENTS):
                    nodes += 1
                    if nodes > MAX_NODES:
                        raise SchemaError([f"{self.name}:{event.start_mark.line + 1}: more than {MAX_NODES:,} YAML "
                                           "nodes (keys, values and items); a system, plan or scenario file needs far fewer"])
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise SchemaError([f"{self.name}:{event.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep"])
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
        except yaml.YAMLError as exc:
            raise SchemaError([self._syntax(exc)]) from None
        finally:
            loader.dispose()

    def _index(self, node: yaml.Node, path: tuple, ancestors: tuple) -> None:
        # Aliases can make a cycle (`&a [*a]`) or expand exponentially ("billion laughs");
        # either would hang or overflow the validators, so refuse them here.
        if any(node is a for a in ancestors):
            raise SchemaError([self.problem(path, "a YAML alias refers to its own ancestor (a cycle)")])
        if len(ancestors) > MAX_DEPTH:
            raise SchemaError([self.problem(path, f"nested more than {MAX_DEPTH} levels deep")])
        self._budget -= 1
        if self._budget < 0:
            # The parse counted fewer than MAX_NODES nodes, so aliases did the expanding.
            raise SchemaError([self.problem(path, f"YAML aliases expand to more than {MAX_NODES:,} nodes")])
        ancestors = ancestors + (node,)
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, value_node in node.value:
                key = key_node.value
                # Only keys written in this mapping: keys a `<<: *anchor` merge brought in
                # (written elsewhere) may be overridden here, as YAML's merge key allows.
                own = node.start_mark.index <= key_node.start_mark.index < node.end_mark.index
                if own and key in seen:
                    self.duplicates.append(
                        f"{self.name}:{key_node.start_mark.line + 1}: {_dotted(path + (key,))}: key appears twice"
                    )
                if own:
                    seen.add(key)
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                self._index(value_node, path + (key,), ancestors)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._index(item, path + (i,), ancestors)

    def line_of(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def problem(self, path: tuple, message: str) -> str:
        line = self.line_of(path)
        where = f"{self.name}:{line}" if line else self.name
        return f"{where}: {_dotted(path) or '(top level)'}: {message}"


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(err: dict, model: type | None = None) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown field" + _did_you_mean(err["loc"][-1], _fields_at(model, _clean_loc(err["loc"])[:-1]))
    if kind == "missing":
        return "required field is missing"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    shown = err.get("input")
    if kind.endswith(("_type", "_parsing")) or kind in ("literal_error", "string_pattern_mismatch", "int_from_float"):
        return f"{msg[0].lower()}{msg[1:]}, got {shown!r}"
    return msg


def _did_you_mean(word: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), sorted(map(str, choices)), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(model: Any, loc: tuple) -> list[str]:
    """The field names of the model found at `loc` (for "did you mean"), or []."""
    tp: Any = model
    for part in loc + (None,):
        while True:  # unwrap Annotated, Optional, list and dict down to a model
            origin, args = typing.get_origin(tp), typing.get_args(tp)
            if origin is typing.Annotated:
                tp = args[0]
            elif origin in (typing.Union, types.UnionType):
                tp = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), args[0])
            elif origin is list and isinstance(part, int):
                tp, part = args[0], "<item>"
            elif origin is dict and part is not None:
                tp, part = args[1], "<item>"
            else:
                break
        if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
            return []
        if part is None:
            return list(tp.model_fields)
        if part != "<item>":
            if part not in tp.model_fields:
                return []
            tp = tp.model_fields[part].annotation
    return []


def _clean_loc(loc: tuple) -> tuple:
    # Pydantic puts validator names (function-after[...], tagged-union tags) into locations.
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))


def _not_a_mapping(doc: _Doc, kind: str | None) -> SchemaError:
    got = {type(None): "an empty file", list: "a list", str: "a single string", bool: "a single true/false",
           int: "a single number", float: "a single number"}.get(type(doc.data), type(doc.data).__name__)
    what = f"a {kind} file" if kind else "a system, plan or scenario file"
    return SchemaError([f"{doc.name}: expected {what}: a YAML mapping of fields at the top level "
                        f"(name: ..., ...), got {got}"])


def _validate(doc: _Doc, kind: Kind) -> Any:
    if not isinstance(doc.data, dict):
        raise _not_a_mapping(doc, kind)
    try:
        model = MODELS[kind].model_validate(doc.data, context={"base_dir": str(doc.path.parent)})
    except ValidationError as exc:
        problems = [doc.problem(_clean_loc(e["loc"]), _message(e, MODELS[kind])) for e in exc.errors()]
        raise SchemaError(doc.duplicates + list(dict.fromkeys(problems))) from None
    if doc.duplicates:
        raise SchemaError(doc.duplicates)
    return model


def detect_kind(data: Any) -> Kind:
    if isinstance(data, dict):
        if "traffic" in data:
            return "scenario"
        if any(isinstance(data.get(k), list) for k in ("topics", "subscriptions", "services", "external_apis")):
            return "system"
        if any(k in data for k in ("stores", "triggers", "workflows", "project", "topics")):
            return "system"
    return "plan"


# ---- cross-references ------------------------------------------------------------------


def _steps_with_paths(system: System) -> Iterator[tuple[tuple, Step]]:
    for i, svc in enumerate(system.services):
        for j, route in enumerate(svc.routes):
            for k, step in enumerate(route.steps):
                yield ("services", i, "routes", j, "steps", k, step.kind), step
        for k, step in enumerate(svc.steps):
            yield ("services", i, "steps", k, step.kind), step
    for i, job in enumerate(system.jobs):
        for k, step in enumerate(job.steps):
            yield ("jobs", i, "steps", k, step.kind), step


def step_problems(system: System, steps: Iterator[tuple[tuple, Step]]) -> Iterator[tuple[tuple, str]]:
    topics = {t.name for t in system.topics}
    collections = {c.name for c in system.stores.firestore}
    tables = {t.ref for t in system.stores.bigquery}
    buckets = {b.name for b in system.stores.storage}
    databases = {d.name for d in system.stores.sql}
    callees = {a.name for a in system.external_apis} | {s.name for s in system.services}
    for path, step in steps:
        spec = step.spec
        if step.kind == "firestore" and spec.collection not in collections:
            yield path + ("collection",), f"collection {spec.collection!r} is not declared under stores.firestore" + _did_you_mean(spec.collection, collections)
        elif step.kind == "call" and spec.api not in callees:
            yield path + ("api",), f"{spec.api!r} is neither an external_api nor a service" + _did_you_mean(spec.api, callees)
        elif step.kind in ("publish", "poll") and spec.topic not in topics:
            yield path + ("topic",), f"topic {spec.topic!r} is not declared under topics" + _did_you_mean(spec.topic, topics)
        elif step.kind == "bigquery" and spec.table is not None and spec.table not in tables:
            yield path + ("table",), f"table {spec.table!r} is not declared under stores.bigquery" + _did_you_mean(spec.table, tables)
        elif step.kind == "storage" and spec.bucket not in buckets:
            yield path + ("bucket",), f"bucket {spec.bucket!r} is not declared under stores.storage" + _did_you_mean(spec.bucket, buckets)
        elif step.kind == "sql" and spec.db not in databases:
            yield path + ("db",), f"database {spec.db!r} is not declared under stores.sql" + _did_you_mean(spec.db, databases)


def system_problems(system: System) -> Iterator[tuple[tuple, str]]:
    topics = {t.name for t in system.topics}
    services = {s.name for s in system.services}
    workflows = {w.name for w in system.workflows}
    collections = {c.name for c in system.stores.firestore}
    tables = {t.ref for t in system.stores.bigquery}
    subscribed = {s.topic for s in system.subscriptions}
    for group in ("topics", "subscriptions", "services", "jobs", "external_apis", "workflows", "triggers"):
        seen: set[str] = set()
        for i, item in enumerate(getattr(system, group)):
            if item.name in seen:
                yield (group, i, "name"), f"{item.name!r} is declared twice"
            seen.add(item.name)
    for i, sub in enumerate(system.subscriptions):
        if sub.topic not in topics:
            yield ("subscriptions", i, "topic"), f"topic {sub.topic!r} is not declared under topics" + _did_you_mean(sub.topic, topics)
        if sub.consumer is not None and sub.consumer not in services | workflows:
            yield ("subscriptions", i, "consumer"), f"{sub.consumer!r} is neither a service nor a workflow"
        if sub.dead_letter is not None:
            dlq = sub.dead_letter.topic
            if dlq not in topics:
                yield ("subscriptions", i, "dead_letter", "topic"), f"topic {dlq!r} is not declared under topics" + _did_you_mean(dlq, topics)
            elif dlq == sub.topic:
                yield ("subscriptions", i, "dead_letter", "topic"), "must differ from the subscription's own topic"
            elif dlq not in subscribed:
                yield ("subscriptions", i, "dead_letter", "topic"), (
                    f"topic {dlq!r} has no subscription, so dead-lettered messages would be dropped; add one"
                )
        if sub.bigquery is not None and sub.bigquery.table not in tables:
            yield ("subscriptions", i, "bigquery", "table"), f"table {sub.bigquery.table!r} is not declared under stores.bigquery" + _did_you_mean(sub.bigquery.table, tables)
    yield from step_problems(system, _steps_with_paths(system))
    for i, trig in enumerate(system.triggers):
        if trig.kind == "firestore" and trig.collection not in collections:
            yield ("triggers", i, "collection"), f"collection {trig.collection!r} is not declared under stores.firestore"
        if trig.topic is not None and trig.topic not in topics:
            yield ("triggers", i, "topic"), f"topic {trig.topic!r} is not declared under topics"
        if trig.bucket is not None and trig.bucket not in {b.name for b in system.stores.storage}:
            yield ("triggers", i, "bucket"), f"bucket {trig.bucket!r} is not declared under stores.storage"
        if trig.dead_letter is not None and trig.dead_letter.topic not in topics:
            yield ("triggers", i, "dead_letter", "topic"), f"topic {trig.dead_letter.topic!r} is not declared under topics"
        if trig.target not in services | workflows:
            yield ("triggers", i, "target"), f"{trig.target!r} is neither a service nor a workflow"
    callees = services | {a.name for a in system.external_apis}
    jobs = {j.name for j in system.jobs}
    for i, wf in enumerate(system.workflows):
        if wf.trigger is not None and wf.trigger not in topics:
            yield ("workflows", i, "trigger"), f"topic {wf.trigger!r} is not declared under topics" + _did_you_mean(wf.trigger, topics)
        comp_names = {c.name for c in wf.compensations}
        for group in ("steps", "compensations"):
            for j, step in enumerate(getattr(wf, group)):
                if step.call is not None and step.call not in callees:
                    yield ("workflows", i, group, j, "call"), f"{step.call!r} is neither a service nor an external_api"
                if step.run_job is not None and step.run_job not in jobs:
                    yield ("workflows", i, group, j, "run_job"), (f"job {step.run_job!r} is not declared under jobs"
                                                                  + _did_you_mean(step.run_job, jobs))
                if step.compensate is not None and step.compensate not in comp_names:
                    yield ("workflows", i, group, j, "compensate"), f"{step.compensate!r} is not one of this workflow's compensations"


def plan_problems(plan: Plan, system: System) -> Iterator[tuple[tuple, str]]:
    services = {s.name for s in system.services}
    subs = {s.name for s in system.subscriptions}
    jobs = {j.name for j in system.jobs}
    for name, sp in plan.services.items():
        if name not in services:
            yield ("services", name), f"service {name!r} is not in system {system.name!r}" + _did_you_mean(name, services)
            continue
        if sp.routes is not None:
            paths = (((("services", name, "routes", j, "steps", k, s.kind), s)
                      for j, r in enumerate(sp.routes) for k, s in enumerate(r.steps)))
            yield from step_problems(system, paths)
        if sp.steps is not None:
            yield from step_problems(system, ((("services", name, "steps", k, s.kind), s) for k, s in enumerate(sp.steps)))
    for name, subp in plan.subscriptions.items():
        if name not in subs:
            yield ("subscriptions", name), f"subscription {name!r} is not in system {system.name!r}" + _did_you_mean(name, subs)
        elif subp.write_latency is not None and system.subscription(name).delivery != "bigquery":
            yield (("subscriptions", name, "write_latency"),
                   f"subscription {name!r} delivers by {system.subscription(name).delivery}; write_latency is a "
                   "BigQuery subscription's (a push or pull consumer's overhead is a step of its handler)")
    kinds = {t.name: t.kind for t in system.triggers}
    for name in plan.triggers:
        if name not in kinds:
            yield ("triggers", name), f"trigger {name!r} is not in system {system.name!r}" + _did_you_mean(name, set(kinds))
        elif kinds[name] == "pubsub":
            yield (("triggers", name, "delivery_latency"),
                   f"trigger {name!r} is a Pub/Sub trigger: its delivery is its push subscription's "
                   f"(plan it under subscriptions: {{eventarc-{name}-sub: ...}})")
    for name in plan.jobs:
        if name not in jobs:
            yield ("jobs", name), f"job {name!r} is not in system {system.name!r}"
    collections = {c.name for c in system.stores.firestore}
    for name in plan.read_every:
        if name not in collections:
            yield ("read_every", name), f"collection {name!r} is not declared under stores.firestore" + _did_you_mean(name, collections)
    apis = {a.name for a in system.external_apis}
    for name in plan.apis:
        if name not in apis:
            yield ("apis", name), f"external API {name!r} is not in system {system.name!r}" + _did_you_mean(name, apis)
    for name in plan.debounce:
        if name not in services:
            yield ("debounce", name), f"service {name!r} is not in system {system.name!r}" + _did_you_mean(name, services)


def scenario_problems(sc: Scenario, system: System, plan: Plan) -> Iterator[tuple[tuple, str]]:
    topics = {t.name for t in system.topics}
    apis = {a.name for a in system.external_apis}
    services = {s.name for s in system.services}
    subs = {s.name for s in system.subscriptions}
    sources = {s.name for s in sc.traffic.sources}
    for i, src in enumerate(sc.traffic.sources):
        if src.curve is not None and src.curve not in sc.traffic.curves:
            yield ("traffic", "sources", i, "curve"), f"curve {src.curve!r} is not declared under traffic.curves"
        yield from sending_problems(src, ("traffic", "sources", i), system, plan)
        if src.job is not None and src.job not in {j.name for j in system.jobs}:
            yield ("traffic", "sources", i, "job"), f"job {src.job!r} is not in system {system.name!r}"
        if src.workflow is not None and src.workflow not in {w.name for w in system.workflows}:
            yield ("traffic", "sources", i, "workflow"), f"workflow {src.workflow!r} is not in system {system.name!r}"
    for i, entry in enumerate(sc.prepare):
        yield from sending_problems(entry, ("prepare", i), system, plan)
        if not isinstance(entry.count, int) and entry.count.cover not in sources:
            yield ("prepare", i, "count", "cover"), (f"source {entry.count.cover!r} is not under traffic.sources"
                                                      + _did_you_mean(entry.count.cover, sources))
    yield from pool_problems(sc)
    for i, wave in enumerate(sc.traffic.waves):
        for field in ("rates", "multiply"):
            for name in getattr(wave, field):
                if name not in sources:
                    yield ("traffic", "waves", i, field, name), f"source {name!r} is not under traffic.sources" + _did_you_mean(name, sources)
        if wave.at + wave.duration > sc.duration:
            yield ("traffic", "waves", i, "duration"), "the wave ends after the scenario does"
    for i, fault in enumerate(sc.faults):
        if fault.at > sc.duration:
            yield ("faults", i, "at"), "the fault starts after the scenario ends"
        if fault.kind.startswith("dependency_") and fault.target not in apis:
            yield ("faults", i, "target"), f"{fault.target!r} is not an external_api of system {system.name!r}" + _did_you_mean(fault.target, apis)
        if fault.kind in ("consumer_down", "bad_deploy") and fault.target not in services:
            yield ("faults", i, "target"), f"{fault.target!r} is not a service of system {system.name!r}" + _did_you_mean(fault.target, services)
        if fault.kind.startswith("job_task_") and fault.target not in {j.name for j in system.jobs}:
            yield ("faults", i, "target"), f"{fault.target!r} is not a job of system {system.name!r}" + _did_you_mean(
                fault.target, [j.name for j in system.jobs])
        if fault.kind in ("bigquery_job_failure", "bigquery_job_slow"):
            yield from _job_fault_problems(("faults", i), fault, system)
        if fault.topic is not None and fault.topic not in topics:
            yield ("faults", i, "topic"), f"topic {fault.topic!r} is not in system {system.name!r}"
    for i, slo in enumerate(sc.slos):
        if slo.metric == "lag":
            # a Firestore or Storage trigger's lag is change -> its target's 2xx
            ok = slo.entity in subs or slo.entity in {t.name for t in system.triggers if t.kind != "pubsub"}
            what = "subscription or Firestore/Storage trigger"
        elif slo.metric in ("backlog", "oldest_unacked", "dlq"):
            ok = slo.entity in subs
            what = "subscription"
        elif slo.metric == "latency":
            svc, _, route = slo.entity.partition(".")
            ok = svc in services and (not route or route in {r.name for r in routes_of(system, plan, svc)})
            what = "service[.route]"
        elif slo.metric == "bigquery_job":
            ok = slo.entity in bigquery_job_services(system)
            what = "service with a `bigquery: {op: job}` step"
        elif slo.metric == "freshness":
            ok = slo.entity in {c.name for c in system.stores.firestore if c.freshness}
            what = "Firestore collection with freshness: true"
        elif slo.metric in ("wait", "pwait"):
            svc, _, channel = slo.entity.partition(".")
            ok = svc in services and (not channel or channel in channels_of(system, plan, svc))
            what = "service[.route, subscription or trigger]"
        else:
            ok = slo.entity in services
            what = "service"
        if not ok:
            yield ("slos", i), f"{slo.metric}.{slo.entity}: no such {what} in system {system.name!r}"
        if slo.func == "drain" and slo.metric != "backlog":
            yield ("slos", i), "drain() applies to backlog.SUBSCRIPTION"
    yield from check_problems(sc, system, plan)


def bigquery_job_services(system: System) -> list[str]:
    """Services with a `bigquery: {op: job}` step: the ones a bigquery_job_failure or
    bigquery_job_slow can hit."""
    return [s.name for s in system.services
            if any(st.bigquery is not None and st.bigquery.op == "job" for st in s.steps)]


def _job_fault_problems(path: tuple, fault, system: System) -> Iterator[tuple[tuple, str]]:
    jobs = bigquery_job_services(system)
    if not jobs:
        what = "fail" if fault.kind == "bigquery_job_failure" else "slow down"
        yield path + ("kind",), (f"{fault.kind}: system {system.name!r} has no service with a "
                                 f"`bigquery: {{op: job}}` step, so there is no BigQuery job to {what}")
    elif fault.target is not None and fault.target not in jobs:
        yield path + ("target",), (f"{fault.target!r} is not a service of system {system.name!r} with a "
                                   f"`bigquery: {{op: job}}` step (those are: {', '.join(jobs)})")


def target_problems(path: tuple, kind: str, spec, system: System, plan: Plan) -> Iterator[tuple[tuple, str]]:
    """A request / publish / firestore / storage target names what the system declares."""
    path = path + (kind,)
    if kind == "publish" and spec.topic not in {t.name for t in system.topics}:
        yield path + ("topic",), f"topic {spec.topic!r} is not in system {system.name!r}"
    elif kind == "request":
        services = {s.name for s in system.services}
        if spec.service not in services:
            yield path + ("service",), f"service {spec.service!r} is not in system {system.name!r}" + _did_you_mean(spec.service, services)
        elif spec.route not in (routes := {r.name for r in routes_of(system, plan, spec.service)}):
            yield path + ("route",), f"service {spec.service!r} has no route {spec.route!r}" + _did_you_mean(spec.route, routes)
    elif kind == "firestore" and spec.collection not in {c.name for c in system.stores.firestore}:
        yield path + ("collection",), (
            f"collection {spec.collection!r} is not declared under stores.firestore of system {system.name!r}")
    elif kind == "storage" and spec.bucket not in {b.name for b in system.stores.storage}:
        yield path + ("bucket",), f"bucket {spec.bucket!r} is not declared under stores.storage of system {system.name!r}"


def _capture_problems(path: tuple, captures: dict[str, str]) -> Iterator[tuple[tuple, str]]:
    from surgesim.templates import jsonpath

    for name, expr in captures.items():
        if expr.startswith("$"):
            try:
                jsonpath(expr)
            except ValueError as exc:
                yield path + ("capture", name), str(exc)


def sending_problems(src, path: tuple, system: System, plan: Plan) -> Iterator[tuple[tuple, str]]:
    """A source's or prepare entry's targets (its own, or each flow step's) and captures."""
    for kind in ("publish", "request", "firestore", "storage"):
        spec = getattr(src, kind, None)
        if spec is not None:
            yield from target_problems(path, kind, spec, system, plan)
    yield from _capture_problems(path, src.capture)
    if src.flow is not None:
        for k, step in enumerate(src.flow.steps):
            if step.kind != "think":
                yield from target_problems(path + ("flow", "steps", k), step.kind, getattr(step, step.kind), system, plan)
            yield from _capture_problems(path + ("flow", "steps", k), step.capture)


def pool_problems(sc: Scenario) -> Iterator[tuple[tuple, str]]:
    """A pool taken from is one something puts into."""
    put = {s.put for s in list(sc.traffic.sources) + list(sc.prepare) if s.put}
    for i, src in enumerate(sc.traffic.sources):
        if src.take is not None and src.take not in put:
            yield (("traffic", "sources", i, "take"),
                   f"no source or prepare entry puts into pool {src.take!r}" + _did_you_mean(src.take, put))


def check_problems(sc: Scenario, system: System, plan: Plan) -> Iterator[tuple[tuple, str]]:
    """The `checks:` relaxations name routes, subscriptions and triggers that exist."""
    services = {s.name for s in system.services}
    subs = {s.name for s in system.subscriptions}
    triggers = {t.name for t in system.triggers}
    checks = sc.checks
    if checks.client_errors is not None:
        flows = {s.name for s in sc.traffic.sources if s.flow is not None}
        for key in checks.client_errors.routes:
            svc, _, route = key.partition(".")
            if svc == "flow" and "flow" not in services:
                if route not in flows:
                    yield (("checks", "client_errors", "routes", key),
                           f"{key!r}: no traffic source {route!r} runs a flow" + _did_you_mean(route, flows))
            elif svc not in services or route not in {r.name for r in routes_of(system, plan, svc)}:
                yield (("checks", "client_errors", "routes", key),
                       f"{key!r} is not a SERVICE.ROUTE of system {system.name!r}, nor flow.SOURCE of a flow")
    if checks.dead_letters is not None:
        for name in checks.dead_letters.allow:
            if name not in subs:
                yield ("checks", "dead_letters", "allow", name), f"{name!r} is not a subscription of system {system.name!r}"
    if checks.lost is not None:
        for name in checks.lost.allow:
            if name not in subs | triggers:
                yield (("checks", "lost", "allow", name),
                       f"{name!r} is neither a subscription nor a trigger of system {system.name!r}")


def channels_of(system: System, plan: Plan, service: str) -> set[str]:
    """What a service takes work from: its routes, the subscriptions it consumes, the
    triggers that target it (the channels of its `wait/` histograms)."""
    return ({r.name for r in routes_of(system, plan, service)}
            | {s.name for s in system.subscriptions if s.consumer == service}
            | {t.name for t in system.triggers if t.target == service})


def template_problems(sc: Scenario, system: System, plan: Plan, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    """Payload template errors of the templated sources, flow steps and prepare entries
    (surgesim/templates.py): syntax, undefined names, unknown Faker providers, files,
    hooks, a trial render (with placeholder values for what pools and captures give)."""
    from surgesim.schema.scenario import pool_variables
    from surgesim.templates import check_source, payload_kind

    pools = pool_variables(list(sc.traffic.sources) + list(sc.prepare))
    everything = [(("traffic", "sources", i), i, src) for i, src in enumerate(sc.traffic.sources)]
    everything += [(("prepare", k), 1_000_000 + k, e) for k, e in enumerate(sc.prepare)]
    for path, i, src in everything:
        known = set(pools.get(src.take, ())) if src.take else set()
        if src.flow is not None:
            known |= set(src.let)
            yield from (((path + p), m) for p, m in check_source(src, i, sc.seed, base_dir, kind="let",
                                                                  project=system.project, known=known))
            for k, step in enumerate(src.flow.steps):
                if step.kind != "think":
                    yield from (((path + ("flow", "steps", k) + p), m)
                                for p, m in check_source(src, i, sc.seed, base_dir, _route(system, plan, step.request),
                                                         project=system.project, known=known, kind=step.kind,
                                                         spec=getattr(step, step.kind)))
                known |= set(step.capture)
            continue
        kind = payload_kind(src)
        if kind is None or not (getattr(src, kind).templated or src.let or src.take or src.put):
            continue
        for p, msg in check_source(src, i, sc.seed, base_dir, _route(system, plan, src.request), project=system.project,
                                   known=known):
            yield path + p, msg


def _route(system: System, plan: Plan, request) -> Route | None:
    if request is None:
        return None
    return next((r for r in routes_of(system, plan, request.service) if r.name == request.route), None)


def routes_of(system: System, plan: Plan, service: str) -> list[Route]:
    sp = plan.services.get(service)
    if sp is not None and sp.routes is not None:
        return sp.routes
    return next((s.routes for s in system.services if s.name == service), [])


def _raise_if(doc: _Doc, problems: Iterator[tuple[tuple, str]]) -> None:
    lines = [doc.problem(path, msg) for path, msg in problems]
    if lines:
        raise SchemaError(lines)


# ---- public entry points -----------------------------------------------------------------


def load_system(path: str | Path, *, shown: str | None = None) -> System:
    doc = _Doc(Path(path), shown)
    system = _validate(doc, "system")
    _raise_if(doc, system_problems(system))
    return _with_workflow_sources(doc, system, Path(path))


def _with_workflow_sources(doc: _Doc, system: System, path: Path) -> System:
    """Resolve each workflow's `source:` next to the system file and validate it now, so an
    unsupported construct is reported before anything starts."""
    from surgesim.workflows import WorkflowSyntaxError, load

    workflows, problems = [], []
    for i, wf in enumerate(system.workflows):
        if wf.source is None:
            workflows.append(wf)
            continue
        src = (path.parent / wf.source).resolve()
        try:
            load(src, jobs={j.name for j in system.jobs})
        except FileNotFoundError:
            problems.append((("workflows", i, "source"), f"no such file: {src}"))
        except WorkflowSyntaxError as exc:
            problems.append((("workflows", i, "source"), str(exc)))
        workflows.append(wf.model_copy(update={"source": str(src)}))
    _raise_if(doc, iter(problems))
    return system.model_copy(update={"workflows": workflows})


def load_plan(path: str | Path, system: System | None = None, *, shown: str | None = None) -> Plan:
    doc = _Doc(Path(path), shown)
    plan = _validate(doc, "plan")
    if system is not None:
        _raise_if(doc, plan_problems(plan, system))
    return plan


@dataclass(frozen=True)
class Experiment:
    """A scenario resolved with its system and plan: what an engine runs."""

    scenario: Scenario
    system: System
    plan: Plan
    scenario_path: Path
    system_path: Path
    plan_path: Path | None

    def service_plan(self, service: str) -> ServicePlan:
        return self.plan.service(service)

    def routes(self, service: str) -> list[Route]:
        return routes_of(self.system, self.plan, service)

    def steps(self, service: str) -> list[Step]:
        sp = self.plan.services.get(service)
        if sp is not None and sp.steps is not None:
            return sp.steps
        return self.system.service(service).steps

    def debounce(self, service: str) -> float:
        return self.plan.debounce.get(service, 0.0)


def _beside(doc: _Doc, relative: str) -> str:
    """A file named in a scenario, shown as the user would reach it from where they are."""
    return os.path.normpath(os.path.join(os.path.dirname(doc.name), relative))


def with_plan_quotas(system: System, plan: Plan) -> System:
    """The system with the plan's API quotas in place of its own, so that both engines (the
    simulator's APIs, the live fakes) run what the plan contracted."""
    if not plan.apis:
        return system
    apis = [a.model_copy(update=plan.apis[a.name].model_dump(exclude_unset=True)) if a.name in plan.apis else a
            for a in system.external_apis]
    return system.model_copy(update={"external_apis": apis})


def load_experiment(scenario_path: str | Path, plan_path: str | Path | None = None) -> Experiment:
    scenario_path = Path(scenario_path)
    doc = _Doc(scenario_path)
    scenario = _validate(doc, "scenario")
    system_path = (scenario_path.parent / scenario.system).resolve()
    if not system_path.is_file():
        raise SchemaError([doc.problem(("system",), f"file {scenario.system!r} not found next to {scenario_path.name}")])
    system = load_system(system_path, shown=_beside(doc, scenario.system))
    plan_shown = None
    if plan_path is None and scenario.plan is not None:
        plan_shown = _beside(doc, scenario.plan)
        plan_path = (scenario_path.parent / scenario.plan).resolve()
        if not plan_path.is_file():
            raise SchemaError([doc.problem(("plan",), f"file {scenario.plan!r} not found next to {scenario_path.name}")])
    plan = load_plan(plan_path, system, shown=plan_shown) if plan_path is not None else Plan(name="defaults")
    system = with_plan_quotas(system, plan)
    _raise_if(doc, scenario_problems(scenario, system, plan))
    _raise_if(doc, template_problems(scenario, system, plan, scenario_path.resolve().parent))
    _raise_if(doc, scenario_limit_problems(scenario))
    return Experiment(scenario, system, plan, scenario_path.resolve(), system_path,
                      Path(plan_path).resolve() if plan_path is not None else None)


def validate_file(path: str | Path) -> tuple[Kind, Any]:
    """Validate any of the three files (a scenario with its system and plan)."""
    doc = _Doc(Path(path))
    if not isinstance(doc.data, dict):
        raise _not_a_mapping(doc, None)
    kind = detect_kind(doc.data)
    if kind == "scenario":
        return kind, load_experiment(path)
    if kind == "system":
        return kind, load_system(path)
    return kind, load_plan(path)
