"""Load and validate a Google Workflows YAML definition into a small tree.

Every construct the executor does not run is rejected here with its step path
(`main.steps.reserve.try.retry: unsupported key 'foo'`), so nothing fails silently mid-run.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .expressions import BUILTIN_VALUES, ExpressionSyntaxError, expression_of, parse as parse_expression

HTTP_CALLS = {"http.get", "http.post", "http.put", "http.patch", "http.delete", "http.request"}
SYS_CALLS = {"sys.sleep", "sys.log"}
HTTP_ARGS = {"url", "body", "headers", "query", "timeout", "auth", "method"}
RUN_JOB = "googleapis.run.v2.projects.locations.jobs.run"
"""The one connector run locally: it starts a Cloud Run job's execution through the live
run's Launcher (surgesim/live/run_api.py) and by default waits for it."""
CONNECTOR_CALLS = {RUN_JOB}
CONNECTOR_ARGS = {"name", "body", "connector_params"}
CONNECTOR_PARAMS = {"skip_polling", "timeout", "polling_policy"}
JOB_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/jobs/([^/]+)$")
MISSING = object()


class WorkflowSyntaxError(ValueError):
    pass


@dataclass
class Step:
    name: str
    body: dict[str, Any]
    path: str


@dataclass
class Subworkflow:
    name: str
    params: list[tuple[str, Any]]
    steps: list[Step]


@dataclass
class Definition:
    subworkflows: dict[str, Subworkflow] = field(default_factory=dict)
    source: str = "<workflow>"

    @property
    def main(self) -> Subworkflow:
        return self.subworkflows["main"]


def load(path: str | Path, jobs: Collection[str] | None = None) -> Definition:
    """jobs: the system's job names, so a jobs.run step naming another job is an error now."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise WorkflowSyntaxError(f"{p}: not YAML: {exc}") from None
    return from_document(doc, str(p), jobs)


def from_document(doc: Any, source: str = "<workflow>", jobs: Collection[str] | None = None) -> Definition:
    d = Definition(source=source)
    if isinstance(doc, list):  # the short form: a list of steps is main
        doc = {"main": {"steps": doc}}
    if not isinstance(doc, dict) or "main" not in doc:
        raise WorkflowSyntaxError(f"{source}: a workflow is a list of steps or a map with a 'main' workflow")
    for name, sub in doc.items():
        where = f"{source}: {name}"
        if not isinstance(sub, dict) or "steps" not in sub:
            raise WorkflowSyntaxError(f"{where}: a (sub)workflow needs 'steps'")
        extra = set(sub) - {"params", "steps"}
        if extra:
            raise WorkflowSyntaxError(f"{where}: unsupported key(s) {sorted(extra)}")
        params = []
        for p in sub.get("params") or []:
            if isinstance(p, str):
                params.append((p, MISSING))
            elif isinstance(p, dict) and len(p) == 1:
                params.append(next(iter(p.items())))
            else:
                raise WorkflowSyntaxError(f"{where}.params: each param is a name or {{name: default}}, got {p!r}")
        d.subworkflows[name] = Subworkflow(name, params, _steps(sub["steps"], f"{name}.steps", where))
    for sub in d.subworkflows.values():
        _check_calls(sub.steps, d, source, jobs)
    return d


def _steps(raw: Any, path: str, where: str) -> list[Step]:
    if not isinstance(raw, list) or not raw:
        raise WorkflowSyntaxError(f"{where}: {path}: 'steps' is a non-empty list of {{name: body}} maps")
    out, seen = [], set()
    for item in raw:
        if not isinstance(item, dict) or len(item) != 1:
            raise WorkflowSyntaxError(f"{where}: {path}: each step is a one-key map {{name: body}}, got {item!r}")
        name, body = next(iter(item.items()))
        if name in seen:
            raise WorkflowSyntaxError(f"{where}: {path}.{name}: duplicate step name")
        seen.add(name)
        out.append(Step(str(name), _body(body, f"{path}.{name}", where), f"{path}.{name}"))
    return out


_STEP_KEYS = {"assign", "call", "args", "result", "switch", "next", "steps", "try", "retry", "except",
              "raise", "return", "for"}


def _body(body: Any, path: str, where: str) -> dict:
    if not isinstance(body, dict):
        raise WorkflowSyntaxError(f"{where}: {path}: a step body is a map, got {body!r}")
    unknown = set(body) - _STEP_KEYS
    if unknown:
        raise WorkflowSyntaxError(f"{where}: {path}: unsupported construct(s) {sorted(unknown)}"
                                  " (see docs/workflows.md for what runs locally)")
    kinds = [k for k in ("assign", "call", "switch", "steps", "try", "raise", "return", "for") if k in body]
    if len(kinds) > 1:
        raise WorkflowSyntaxError(f"{where}: {path}: one of {kinds} per step")
    if ("retry" in body or "except" in body) and "try" not in body:
        raise WorkflowSyntaxError(f"{where}: {path}: 'retry'/'except' need a 'try'")
    if ("args" in body or "result" in body) and "call" not in body:
        raise WorkflowSyntaxError(f"{where}: {path}: 'args'/'result' need a 'call'")
    out = dict(body)
    _expressions(body, path, where)
    if "assign" in body:
        if not isinstance(body["assign"], list) or not all(isinstance(a, dict) and len(a) == 1 for a in body["assign"]):
            raise WorkflowSyntaxError(f"{where}: {path}.assign: a list of one-key maps {{target: value}}")
        for a in body["assign"]:
            target = next(iter(a))
            try:
                parse_expression(str(target))
            except ExpressionSyntaxError as exc:
                raise WorkflowSyntaxError(f"{where}: {path}.assign: target {target!r}: {exc}") from None
    if "call" in body and not isinstance(body["call"], str):
        raise WorkflowSyntaxError(f"{where}: {path}.call: a name, got {body['call']!r}")
    if "call" in body and body["call"] in HTTP_CALLS:
        args = body.get("args") or {}
        if not isinstance(args, dict) or "url" not in args:
            raise WorkflowSyntaxError(f"{where}: {path}.args: {body['call']} needs a 'url'")
        if set(args) - HTTP_ARGS:
            raise WorkflowSyntaxError(f"{where}: {path}.args: unsupported {sorted(set(args) - HTTP_ARGS)}")
        auth = args.get("auth")
        if auth is not None and (not isinstance(auth, dict) or auth.get("type") not in ("OIDC", "OAuth2")):
            raise WorkflowSyntaxError(f"{where}: {path}.args.auth: type OIDC or OAuth2, got {auth!r}")
    if "call" in body and body["call"] in CONNECTOR_CALLS:
        _connector_args(body.get("args"), f"{path}.args", where)
    if "switch" in body:
        if not isinstance(body["switch"], list) or not body["switch"]:
            raise WorkflowSyntaxError(f"{where}: {path}.switch: a non-empty list of conditions")
        out["switch"] = []
        for i, case in enumerate(body["switch"]):
            cpath = f"{path}.switch[{i}]"
            if not isinstance(case, dict) or "condition" not in case:
                raise WorkflowSyntaxError(f"{where}: {cpath}: each case needs a 'condition'")
            rest = {k: v for k, v in case.items() if k != "condition"}
            if not rest:
                raise WorkflowSyntaxError(f"{where}: {cpath}: a case needs next/steps/assign/return/raise")
            out["switch"].append({"condition": case["condition"], "body": _body(rest, cpath, where)})
    if "steps" in body:
        out["steps"] = _steps(body["steps"], f"{path}.steps", where)
    if "try" in body:
        t = body["try"]
        out["try"] = _body(t, f"{path}.try", where)
        if "retry" in body:
            out["retry"] = _retry(body["retry"], f"{path}.retry", where)
        if "except" in body:
            e = body["except"]
            if not isinstance(e, dict) or "steps" not in e or set(e) - {"as", "steps"}:
                raise WorkflowSyntaxError(f"{where}: {path}.except: {{as: name, steps: [...]}}")
            out["except"] = {"as": e.get("as"), "steps": _steps(e["steps"], f"{path}.except.steps", where)}
    if "for" in body:
        f = body["for"]
        if not isinstance(f, dict) or "value" not in f or "steps" not in f or ("in" in f) == ("range" in f) \
                or set(f) - {"value", "index", "in", "range", "steps"}:
            raise WorkflowSyntaxError(f"{where}: {path}.for: {{value, [index], in | range, steps}}")
        out["for"] = {**f, "steps": _steps(f["steps"], f"{path}.for.steps", where)}
    return out


def _retry(r: Any, path: str, where: str) -> Any:
    if isinstance(r, str):
        text = expression_of(r)
        if text is None or text.strip() not in BUILTIN_VALUES:
            raise WorkflowSyntaxError(f"{where}: {path}: a built-in policy like ${{http.default_retry}}, got {r!r}")
        return r
    if not isinstance(r, dict) or "predicate" not in r or set(r) - {"predicate", "max_retries", "backoff"}:
        raise WorkflowSyntaxError(f"{where}: {path}: {{predicate, max_retries, backoff}} or a built-in policy")
    b = r.get("backoff") or {}
    if not isinstance(b, dict) or set(b) - {"initial_delay", "max_delay", "multiplier"}:
        raise WorkflowSyntaxError(f"{where}: {path}.backoff: {{initial_delay, max_delay, multiplier}}")
    return r


def _expressions(value: Any, path: str, where: str) -> None:
    """Parse every `${...}` now, so a typo is a validation error with its step path."""
    text = expression_of(value)
    if text is not None:
        try:
            parse_expression(text)
        except ExpressionSyntaxError as exc:
            raise WorkflowSyntaxError(f"{where}: {path}: {exc}") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in ("steps",):
                _expressions(v, path, where)
    elif isinstance(value, list):
        for v in value:
            _expressions(v, path, where)


def _connector_args(args: Any, path: str, where: str) -> None:
    if not isinstance(args, dict) or "name" not in args:
        raise WorkflowSyntaxError(f"{where}: {path}: {RUN_JOB} needs a 'name' "
                                  "(projects/PROJECT/locations/LOCATION/jobs/JOB)")
    if set(args) - CONNECTOR_ARGS:
        raise WorkflowSyntaxError(f"{where}: {path}: unsupported {sorted(set(args) - CONNECTOR_ARGS)} "
                                  f"(name, body, connector_params)")
    name = args["name"]
    if isinstance(name, str) and expression_of(name) is None and not JOB_NAME.match(name):
        raise WorkflowSyntaxError(f"{where}: {path}.name: {name!r} is not projects/PROJECT/locations/LOCATION/jobs/JOB")
    params = args.get("connector_params")
    if params is not None:
        if not isinstance(params, dict) or set(params) - CONNECTOR_PARAMS:
            raise WorkflowSyntaxError(f"{where}: {path}.connector_params: a map of {sorted(CONNECTOR_PARAMS)}, "
                                      f"got {params!r}")
        policy = params.get("polling_policy")
        if policy is not None and (not isinstance(policy, dict)
                                   or set(policy) - {"initial_delay", "max_delay", "multiplier"}):
            raise WorkflowSyntaxError(f"{where}: {path}.connector_params.polling_policy: "
                                      "{initial_delay, max_delay, multiplier}")


def _check_calls(steps: list[Step], d: Definition, source: str, jobs: Collection[str] | None = None) -> None:
    def walk(body: dict, path: str) -> None:
        call = body.get("call")
        if call is not None and call.startswith("googleapis.") and call not in CONNECTOR_CALLS:
            raise WorkflowSyntaxError(f"{source}: {path}.call: connector {call!r} does not run locally; of the "
                                      f"connectors only {RUN_JOB} does (docs/workflows.md)")
        if call is not None and call not in HTTP_CALLS | SYS_CALLS | CONNECTOR_CALLS and call not in d.subworkflows:
            raise WorkflowSyntaxError(f"{source}: {path}.call: unsupported call {call!r} (http.*, sys.sleep, "
                                      f"sys.log, {RUN_JOB} or a subworkflow of this file)")
        if call in CONNECTOR_CALLS and jobs is not None:
            name = body["args"]["name"]
            m = JOB_NAME.match(name) if isinstance(name, str) and expression_of(name) is None else None
            if m and m.group(1) not in jobs:
                raise WorkflowSyntaxError(f"{source}: {path}.args.name: job {m.group(1)!r} is not a job of the "
                                          f"system (its jobs: {', '.join(sorted(jobs)) or 'none'})")
        for case in body.get("switch") or []:
            walk(case["body"], path + ".switch")
        for key in ("steps",):
            for s in body.get(key) or []:
                walk(s.body, s.path)
        if "try" in body:
            walk(body["try"], path + ".try")
        if "except" in body:
            for s in body["except"]["steps"]:
                walk(s.body, s.path)
        if "for" in body:
            for s in body["for"]["steps"]:
                walk(s.body, s.path)

    for s in steps:
        walk(s.body, s.path)


def run_job_steps(d: Definition) -> list[tuple[str, str | None]]:
    """(step path, job name or None when an expression names it) of every jobs.run step:
    what the simulator, which runs a workflow's `steps:` model instead, warns it leaves out."""
    out: list[tuple[str, str | None]] = []

    def walk(body: dict, path: str) -> None:
        if body.get("call") == RUN_JOB:
            name = (body.get("args") or {}).get("name")
            m = JOB_NAME.match(name) if isinstance(name, str) and expression_of(name) is None else None
            out.append((path, m.group(1) if m else None))
        for case in body.get("switch") or []:
            walk(case["body"], path)
        if "try" in body:
            walk(body["try"], path + ".try")
        blocks = [body.get("steps") or [], (body.get("except") or {}).get("steps") or [],
                  (body.get("for") or {}).get("steps") or []]
        for block in blocks:
            for s in block:
                walk(s.body, s.path)

    for sub in d.subworkflows.values():
        for s in sub.steps:
            walk(s.body, s.path)
    return out

