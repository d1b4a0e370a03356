"""`surgesim import terraform`: a Terraform directory -> a system file and a plan.

hcl.py reads the files (python-hcl2), expr.py and resolve.py evaluate what is static,
mapping.py turns resources into the system file's terms, drift.py compares an import
with an existing system file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from surgesim.importers.terraform.expr import Evaluator, Unknown, contains_unknown, materialise, read_text_file
from surgesim.importers.terraform.hcl import HclError, parse_expression, read_tfvars
from surgesim.importers.terraform.mapping import Builder, finish, map_instance, to_plan, to_system
from surgesim.importers.terraform.resolve import load
from surgesim.schema.loading import plan_problems, system_problems
from surgesim.schema.plan import Plan
from surgesim.schema.system import System


class ImportError_(ValueError):
    """The directory could not be imported: one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class Imported:
    system: dict
    plan: dict
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    origins: dict[tuple[str, str], str] = field(default_factory=dict)
    left_out: set[tuple[str, str]] = field(default_factory=set)

    def system_yaml(self, source: Path) -> str:
        return _header(source, self.notes, self.skipped) + _dump(self.system)

    def plan_yaml(self, source: Path) -> str:
        return f"# Imported from {source} by `surgesim import terraform`.\n" + _dump(self.plan)


def _dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)


def _header(source: Path, notes: list[str], skipped: list[str]) -> str:
    lines = [f"Imported from {source} by `surgesim import terraform`.", ""]
    if notes:
        lines += ["To fill or to know:"] + [f"  - {n}" for n in notes] + [""]
    if skipped:
        lines += ["Left out:"] + [f"  - {s}" for s in skipped] + [""]
    # A value from the Terraform may hold a line break: keep each message on its comment line.
    lines = [l.replace("\r", "\\r").replace("\n", "\\n") for l in lines]
    return "".join(f"# {l}\n".replace("# \n", "#\n") for l in lines)


def _cli_variables(assignments: list[str], var_files: list[Path]) -> dict[str, Any]:
    """-var-file files first, then -var in order (Terraform's precedence)."""
    values: dict[str, Any] = {}
    problems: list[str] = []

    def evaluate(expr, origin: str) -> Any:
        class _NoNames:  # a variable's value may call functions but name nothing
            def lookup(self, name):
                return Unknown(f"a variable value cannot refer to {name!r}")

            def child(self, names):
                return self

            def read_file(self, path):
                return read_text_file(path, Path.cwd())

        value = materialise(Evaluator(_NoNames()).eval(expr))
        unknown = contains_unknown(value)
        if unknown:
            problems.append(f"{origin}: {unknown.reason}")
        return value

    for path in var_files:
        try:
            for name, attr in read_tfvars(path).items():
                values[name] = evaluate(attr.expr, str(attr.where))
        except HclError as exc:
            problems.append(str(exc))
    for text in assignments:
        name, sep, raw = text.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name.strip()):
            problems.append(f"-var {text!r}: expected NAME=VALUE")
            continue
        raw = raw.strip()
        # Terraform reads a -var value as HCL when it is a list, map or number; otherwise a string.
        if raw[:1] in "[{\"" or re.fullmatch(r"-?\d+(\.\d+)?|true|false", raw):
            try:
                values[name.strip()] = evaluate(parse_expression(raw, f"-var {name}"), f"-var {name}")
            except HclError as exc:
                problems.append(str(exc))
        else:
            values[name.strip()] = raw
    if problems:
        raise ImportError_(problems)
    return values


def _system_name(directory: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "imported-" + name
    return name[:63].rstrip("-")


def import_terraform(directory: Path, *, variables: list[str] = (), var_files: list[Path] = (),
                     name: str | None = None) -> Imported:
    """Import DIR; raises ImportError_ listing every problem when any attribute that matters
    cannot be resolved, or when the result does not validate."""
    directory = Path(directory)
    # As terraform does: terraform.tfvars and *.auto.tfvars load first, then -var-file, then -var.
    auto = [p for p in [directory / "terraform.tfvars", *sorted(directory.glob("*.auto.tfvars"))] if p.is_file()]
    given = _cli_variables(list(variables), auto + [Path(p) for p in var_files])
    problems: list[str] = []
    try:
        root = load(directory, given, problems)
    except HclError as exc:
        raise ImportError_([str(exc)]) from None
    b = Builder()
    b.problems = problems
    try:
        _map_all(root, b, problems)
    except RecursionError:
        raise ImportError_([f"{directory}: expressions nested too deeply to evaluate"]) from None
    system_name = name or _system_name(directory)
    project = root.project()
    if not (isinstance(project, str) and re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", project)):
        why = project.reason if isinstance(project, Unknown) else f"{project!r} is not a project id"
        b.notes.append(f"project: {why}; the system file keeps the local default")
        project = None
    system = to_system(b, system_name, project)
    plan = to_plan(b, system_name)
    if not problems:
        problems += _validation_problems(system, plan, b.origins)
    if problems:
        raise ImportError_(problems)
    return Imported(system, plan, b.notes, b.skipped, b.origins, b.left_out)


def _map_all(root, b: Builder, problems: list[str]) -> None:
    for res in root.all_resources():
        instances = res.instances()
        if not isinstance(instances, list):
            meta = "count" if "count" in res.block.attrs else "for_each"
            problems.append(f"{res.block.where}: {res.addr}: {meta}: cannot be resolved statically: {instances.reason}")
            continue
        for inst in instances:
            if not map_instance(b, inst):
                b.skipped.append(f"{inst.where}: {inst.addr}: type {inst.type} has no counterpart in the system file")
    finish(b)


def _where(system: dict, loc: tuple, origins: dict[tuple[str, str], str]) -> str:
    """'subscriptions[2].retention (main.tf:40 google_pubsub_subscription.x)'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (("." if path else "") + str(part))
    origin = None
    if len(loc) >= 2 and isinstance(loc[1], int):
        group = loc[0]
        items = system.get(group, [])
        if loc[1] < len(items):
            origin = origins.get((group, items[loc[1]].get("name", "")))
    elif len(loc) >= 3 and loc[0] == "stores" and isinstance(loc[2], int):
        items = system.get("stores", {}).get(loc[1], [])
        if loc[2] < len(items):
            item = items[loc[2]]
            key = f"{item.get('dataset')}.{item.get('table')}" if loc[1] == "bigquery" else item.get("name", "")
            origin = origins.get((f"stores.{loc[1]}", key))
    return f"{path} (from {origin})" if origin else path


def _validation_problems(system: dict, plan: dict, origins: dict) -> list[str]:
    out: list[str] = []
    try:
        model = System.model_validate(system)
    except ValidationError as exc:
        return [f"imported system: {_where(system, tuple(p for p in e['loc'] if not (isinstance(p, str) and '[' in p)), origins)}: "
                f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
    out += [f"imported system: {_where(system, path, origins)}: {msg}" for path, msg in system_problems(model)]
    try:
        plan_model = Plan.model_validate(plan)
    except ValidationError as exc:
        return out + [f"imported plan: {'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                      for e in exc.errors()]
    out += [f"imported plan: {'.'.join(map(str, path))}: {msg}" for path, msg in plan_problems(plan_model, model)]
    return out


__all__ = ["Imported", "ImportError_", "import_terraform"]
