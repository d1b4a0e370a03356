"""A local executor for Google Cloud Workflows YAML (see docs/workflows.md).

Parsing and validation need nothing beyond the base install (the schema loader validates a
workflow's `source:` with them); the executor makes HTTP calls with httpx, from the `live`
extra, so it is imported only when asked for."""

from .expressions import WorkflowError
from .parse import Definition, WorkflowSyntaxError, from_document, load


def __getattr__(name: str):
    if name in ("Execution", "Executor"):
        from . import executor

        return getattr(executor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Definition", "Execution", "Executor", "WorkflowError", "WorkflowSyntaxError", "from_document", "load"]
