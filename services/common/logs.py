"""Structured logs as Cloud Logging reads them from a Cloud Run container: one JSON object
per line on stdout with `severity`, `message` and the trace in
`logging.googleapis.com/trace`, so the logs of one request and every event it caused
group under one trace."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys

from . import trace

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_SEVERITY = {"WARNING": "WARNING", "CRITICAL": "CRITICAL", "ERROR": "ERROR", "INFO": "INFO", "DEBUG": "DEBUG"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, project: str) -> None:
        super().__init__()
        self.service = service
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        out: dict = {
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": record.getMessage(),
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
            "service": self.service,
            "logger": record.name,
        }
        ctx = trace.current.get()
        if ctx is not None:
            out["logging.googleapis.com/trace"] = f"projects/{self.project}/traces/{ctx.trace_id}"
            out["logging.googleapis.com/spanId"] = ctx.span_id
            out["logging.googleapis.com/trace_sampled"] = ctx.sampled
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(service: str) -> logging.Logger:
    """The service's logger, writing JSON lines to stdout (idempotent per service name)."""
    logger = logging.getLogger(f"surgesim.services.{service}")
    if not any(getattr(h, "_surgesim_json", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter(service, os.environ.get("GOOGLE_CLOUD_PROJECT", "surgesim-local")))
        handler._surgesim_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    return logger
