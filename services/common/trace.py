"""W3C trace context (`traceparent`), carried from the HTTP request through the Firestore
document and the Pub/Sub attribute to every reactor, so one trace id joins the logs."""

from __future__ import annotations

import contextvars
import re
import secrets
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# Cloud Run's own header: TRACE_ID/SPAN_ID;o=1 (span id in decimal).
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?(?:;o=(\d))?$")


@dataclass(frozen=True)
class TraceContext:
    trace_id: str
    span_id: str
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def child(self) -> "TraceContext":
        """Same trace, a new span: what a service passes on to the next hop."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.sampled)


def new_trace() -> TraceContext:
    return TraceContext(secrets.token_hex(16), secrets.token_hex(8))


def parse_traceparent(value: str | None) -> TraceContext | None:
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if not m or m.group(1) == "ff" or set(m.group(2)) == {"0"} or set(m.group(3)) == {"0"}:
        return None
    return TraceContext(m.group(2), m.group(3), bool(int(m.group(4), 16) & 1))


def parse_cloud_trace(value: str | None) -> TraceContext | None:
    if not value:
        return None
    m = _CLOUD_TRACE.match(value.strip())
    if not m:
        return None
    span = format(int(m.group(2)) & (2**64 - 1), "016x") if m.group(2) else secrets.token_hex(8)
    if span == "0" * 16:
        span = secrets.token_hex(8)
    return TraceContext(m.group(1).lower(), span, m.group(3) != "0")


def from_headers(headers) -> TraceContext:
    """The caller's trace (traceparent, else X-Cloud-Trace-Context) as a child span, or a new trace."""
    ctx = parse_traceparent(headers.get("traceparent")) or parse_cloud_trace(headers.get("x-cloud-trace-context"))
    return ctx.child() if ctx else new_trace()


current: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar("surgesim_trace", default=None)
