"""Request paths folded back to the route templates the system file declares.

A front counts latency per request path, and paths carry ids (`/x/123/y`); a summary wants
one entry per route. The templates come from the routes' own `path:` (`/x/{id}/y`), so the
folding knows no system: each `{placeholder}` matches one path segment."""

from __future__ import annotations

import re


class PathFolder:
    """Maps a concrete request path to the first declared template it matches (itself if none)."""

    def __init__(self, templates: list[str]) -> None:
        # literal templates first (`/items/new` before `/items/{id}`), then longer before shorter
        ordered = sorted(set(templates), key=lambda t: ("{" in t, -len(t)))
        self._patterns = [(re.compile(_pattern(t)), t) for t in ordered]

    def fold(self, path: str) -> str:
        path = path.split("?", 1)[0]
        for pattern, template in self._patterns:
            if pattern.fullmatch(path):
                return template
        return path


def _pattern(template: str) -> str:
    parts = re.split(r"(\{\w+\})", template)
    return "".join("[^/]+" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts)
