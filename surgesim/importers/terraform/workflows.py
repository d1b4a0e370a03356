"""A `google_workflows_workflow` into the system file's saga model: the HTTP calls of its
main steps, each to a Cloud Run service of the configuration, and its Cloud Run jobs.run
steps, each of a job of the configuration (`run_job`), with their retry policy.
Assignments, switches and returns shape data, not load, so they are left out (and said
so); a call whose URL cannot be traced to a service leaves the whole workflow out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from surgesim.importers.terraform.mapping import Builder, mapper, service_of_url
from surgesim.importers.terraform.resolve import Instance
from surgesim.schema.common import format_duration
from surgesim.workflows.parse import RUN_JOB

_ENV = re.compile(r"""sys\.get_env\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\)""")
_LITERAL = re.compile(r"""["']([^"']*)["']""")
_JOB = re.compile(r"/jobs/([a-z][a-z0-9-]*)$")


@dataclass
class WorkflowSource:
    name: str
    source: str
    env: dict[str, str]
    inst: Instance


def _url(expr: Any, env: dict[str, str]) -> str | None:
    """The URL a step calls: a literal, or `${sys.get_env("X") + "/path"}` with X from user_env_vars."""
    if not isinstance(expr, str):
        return None
    text = expr.strip()
    if not (text.startswith("${") and text.endswith("}")):
        return text
    inner = text[2:-1]
    m = _ENV.search(inner)
    if m is None or m.group(1) not in env:
        return None
    rest = inner[m.end():]
    tail = "".join(_LITERAL.findall(rest)) if rest.strip().startswith("+") else ""
    return env[m.group(1)] + tail


def _steps(doc: Any) -> list | None:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("main"), dict):
        return doc["main"].get("steps")
    return None


@mapper("google_workflows_workflow")
def _workflow(b: Builder, inst: Instance) -> None:
    """Read now, translated by finish() once every service is known."""
    name = b.get(inst, inst, "name")
    source = b.get(inst, inst, "source_contents")
    env = b.get(inst, inst, "user_env_vars", {}) or {}
    b.workflows[name] = WorkflowSource(name, source, {k: str(v) for k, v in env.items()}, inst)


def translate_workflow(src: WorkflowSource, services: set[str], b: Builder) -> dict | None:
    where = f"{src.inst.where}: {src.inst.addr}"
    try:
        doc = yaml.safe_load(src.source)
    except yaml.YAMLError as exc:
        b.skipped.append(f"{where}: source_contents is not YAML ({str(exc).splitlines()[0]}); workflow left out")
        return None
    steps = _steps(doc)
    if not isinstance(steps, list):
        b.skipped.append(f"{where}: source_contents has no main steps; workflow left out")
        return None
    out: list[dict] = []
    ignored: list[str] = []
    for item in steps:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (step_name, body), = item.items()
        if not isinstance(body, dict):
            continue
        retry = None
        if "try" in body and isinstance(body["try"], dict):
            retry, body = body.get("retry"), body["try"]
        call = body.get("call")
        args = body.get("args") or {}
        if call == RUN_JOB:
            job = _job_of(args.get("name"), set(b.jobs))
            if job is None:
                b.skipped.append(f"{where}: step {step_name}: cannot tell which job of this configuration "
                                 f"{args.get('name')!r} runs; workflow left out")
                return None
            out.append(_job_step(str(step_name), job, args.get("connector_params") or {}, retry))
            continue
        if not (isinstance(call, str) and call.startswith("http.")):
            ignored.append(str(step_name))
            continue
        url = _url(args.get("url"), src.env)
        found = service_of_url(url, services) if url else None
        if found is None:
            b.skipped.append(f"{where}: step {step_name}: cannot tell which service {args.get('url')!r} calls "
                             "(use a service's uri through user_env_vars); workflow left out")
            return None
        step: dict[str, Any] = {"name": _step_name(step_name), "call": found[0]}
        if isinstance(args.get("timeout"), (int, float)):
            step["timeout"] = format_duration(float(args["timeout"]))
        _retry(step, retry)
        out.append(step)
    if not out:
        b.skipped.append(f"{where}: no HTTP call to a service or job run among its main steps; workflow left out")
        return None
    if ignored:
        b.note(src.inst, f"workflow {src.name}: steps {', '.join(ignored)} (no service call or job run) are not "
                         "modelled; compensations (except blocks) are not imported")
    return {"name": src.name, "steps": out}


def _step_name(name: Any) -> str:
    return re.sub(r"[^a-z0-9_]", "_", str(name).lower()).lstrip("_0123456789") or "step"


def _retry(step: dict, retry: Any) -> None:
    if isinstance(retry, dict):
        if isinstance(retry.get("max_retries"), int):
            step["retries"] = retry["max_retries"]
        backoff = retry.get("backoff") or {}
        if isinstance(backoff.get("initial_delay"), (int, float)):
            step["backoff"] = format_duration(float(backoff["initial_delay"]))


def _job_of(name: Any, jobs: set[str]) -> str | None:
    """The job a jobs.run step's `name` names: `.../jobs/NAME`, written out or as the last
    literal of a `${...}` expression."""
    if not isinstance(name, str):
        return None
    m = _JOB.search("".join(_LITERAL.findall(name)) if name.strip().startswith("${") else name)
    return m.group(1) if m and m.group(1) in jobs else None


def _job_step(name: str, job: str, params: dict, retry: Any) -> dict:
    """A jobs.run step as the model's `run_job` step: skip_polling is `wait: false`, the
    connector's timeout (default 30 minutes) the step's."""
    step: dict[str, Any] = {"name": _step_name(name), "run_job": job}
    if params.get("skip_polling") is True:
        step["wait"] = False
    if isinstance(params.get("timeout"), (int, float)):
        step["timeout"] = format_duration(float(params["timeout"]))
    _retry(step, retry)
    return step
