"""A local executor for Google Cloud Workflows YAML (see docs/workflows.md)."""

from .executor import Execution, Executor
from .expressions import WorkflowError
from .parse import Definition, WorkflowSyntaxError, from_document, load

__all__ = ["Definition", "Execution", "Executor", "WorkflowError", "WorkflowSyntaxError", "from_document", "load"]
