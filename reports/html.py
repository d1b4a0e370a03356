"""Rendering: Jinja2 templates next to this module, with the report's number formats as filters."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from surgesim.reports import fmt

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(count=fmt.count, ms=fmt.ms, duration=fmt.duration, money=fmt.money,
                       clock=fmt.clock, percent=fmt.percent)
    return env


def render(template: str, out: Path, **context) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(environment().get_template(template).render(**context), encoding="utf-8")
    return out
