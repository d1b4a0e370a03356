"""`surgesim schema`: JSON Schema of the three files, for editors (completion, hover docs,
unknown-key warnings through the YAML language server)."""

from __future__ import annotations

import json
from pathlib import Path

import click

KINDS = ("system", "plan", "scenario")


def json_schema(kind: str) -> dict:
    """The file kind's JSON Schema, generated from the same pydantic models `validate` uses.

    The models parse shorthands before validating (durations `250ms`, rates `900/s`, clock
    times `06:00`, an SLO line, a curve as a mapping, a latency as one value); pydantic's
    schema describes only the parsed form, so numbers also accept strings, and a model
    with a shorthand of its own also accepts the shorthand's plain types. `surgesim
    validate` remains the judge of those; the schema is for completion and typos."""
    from surgesim.schema import Plan, Scenario, System

    model = {"system": System, "plan": Plan, "scenario": Scenario}[kind]
    out = model.model_json_schema()
    models, parsed_first = _models(model)
    shorthand = {m.__name__ for m in models if _has_before_validator(m) or m in parsed_first}
    for name, sub in out.get("$defs", {}).items():
        if name in shorthand:
            out["$defs"][name] = {"anyOf": [sub, {"type": ["string", "number", "array", "object"]}]}
    out = _numbers_take_strings(out)
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = f"surgesim {kind} file"
    return out


def _models(root) -> tuple[set, set]:
    """Every pydantic model reachable from root's fields, and those that some field parses
    with a BeforeValidator first (a shorthand such as `latency: 5ms`)."""
    import typing

    from pydantic import BaseModel, BeforeValidator

    seen: set = set()
    parsed_first: set = set()
    todo = [root]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for field in m.model_fields.values():
            stack = [(field.annotation, any(isinstance(x, BeforeValidator) for x in field.metadata))]
            while stack:
                t, before = stack.pop()
                if typing.get_origin(t) is typing.Annotated:
                    before = before or any(isinstance(x, BeforeValidator) for x in t.__metadata__)
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
                    if before:
                        parsed_first.add(t)
                stack.extend((a, before) for a in typing.get_args(t))
    return seen, parsed_first


def _has_before_validator(model) -> bool:
    return any(d.info.mode == "before" for d in model.__pydantic_decorators__.model_validators.values())


def _numbers_take_strings(node):
    if isinstance(node, dict):
        node = {k: _numbers_take_strings(v) for k, v in node.items()}
        if node.get("type") in ("number", "integer"):
            bounds = {k: node.pop(k) for k in list(node) if k in ("minimum", "maximum", "exclusiveMinimum",
                                                                   "exclusiveMaximum", "type")}
            return {**node, "anyOf": [bounds, {"type": "string"}]}
        return node
    if isinstance(node, list):
        return [_numbers_take_strings(v) for v in node]
    return node


@click.command()
@click.argument("kind", type=click.Choice(KINDS))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
def schema(kind: str, out: Path | None) -> None:
    """Print the JSON Schema of a KIND file (system, plan or scenario) for editor completion.

    \b
    With the YAML language server (VS Code's YAML extension), put at the top of a file:
      # yaml-language-server: $schema=./scenario.schema.json
    after `surgesim schema scenario --out scenario.schema.json`."""
    text = json.dumps(json_schema(kind), indent=2, sort_keys=True) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"{out}: JSON Schema of a {kind} file", err=True)
