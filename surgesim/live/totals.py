"""The live run's per-route answers and per-trigger deliveries, in the shape
`summary["totals"]` keeps them (read by surgesim/checks.py's implicit checks).

    routes:   {"<service>.<route>": {"requests", "status": {"<code>": n}, "rejected", "errors"}}
              and per flow source "flow.<name>": {"requests": flows started, "status":
              {"completed": n, "aborted": n}, "aborted_at": {"<step label>": n}, ...}
    triggers: {"<trigger>": {"changes", "delivered", "given_up", "pending", "failed_attempts"}}

A route's counts come from the load generator's per-source counts (`status_<code>`, where
a code that is not a number is a transport failure such as ConnectError): 429s are
`rejected`, every other answer that is not 2xx, and every transport failure, is an error.
"""

from __future__ import annotations


def route_totals(scenario, counts: dict[str, dict[str, int]]) -> dict[str, dict]:
    """Per `<service>.<route>` (sources and flow steps sending to the same route are added
    together), and per flow `flow.<name>`: an aborted flow is a client error of its own
    (surgesim/checks.py judges these rows like the routes')."""
    out: dict[str, dict] = {}
    for src in scenario.traffic.sources:
        flow = getattr(src, "flow", None)
        if flow is not None:
            for k, step in enumerate(flow.steps):
                if step.request is not None:
                    _add(out, step.request, counts.get(f"{src.name}.{step.label or k + 1}"))
            c = counts.get(src.name)
            if c:
                done, aborted = int(c.get("flows_completed", 0)), int(c.get("flows_aborted", 0))
                out[f"flow.{src.name}"] = {
                    "requests": done + aborted, "status": {"completed": done, "aborted": aborted}, "rejected": 0,
                    "errors": aborted, "aborted_at": {k[len("aborted_at_"):]: int(n) for k, n in c.items()
                                                      if k.startswith("aborted_at_")}}
            continue
        _add(out, getattr(src, "request", None), counts.get(src.name))
    return out


def _add(out: dict[str, dict], req, counts: dict[str, int] | None) -> None:
    if req is not None and counts:
        key = f"{req.service}.{req.route}" if getattr(req, "route", None) else str(req.service)
        row = out.setdefault(key, {"requests": 0, "status": {}, "rejected": 0, "errors": 0})
        for k, n in counts.items():
            if not k.startswith("status_"):
                continue
            code = k[len("status_"):]
            row["status"][code] = row["status"].get(code, 0) + int(n)
            row["requests"] += int(n)
            if code == "429":
                row["rejected"] += int(n)
            elif not (code.isdigit() and 200 <= int(code) < 300):
                row["errors"] += int(n)


def trigger_bridges(bridges) -> dict:
    """Every Firestore and Storage trigger bridge of the run, by trigger name."""
    return {**(getattr(bridges, "triggers", None) or {}), **(getattr(bridges, "storage_triggers", None) or {})}


def trigger_totals(bridges) -> dict[str, dict]:
    """From each Firestore and Storage trigger bridge's counters (a Pub/Sub trigger is a push
    subscription, reported with the subscriptions): changes it saw that its event types want
    (changes - skipped), delivered (2xx), given up after its attempts (a loss), and
    pending (queued or in flight when read)."""
    out = {}
    for name, t in trigger_bridges(bridges).items():
        c = t.counters
        changes = c.changes - c.skipped
        out[name] = {"changes": changes, "delivered": c.sent, "given_up": c.gave_up,
                     "pending": max(0, changes - c.sent - c.gave_up), "failed_attempts": c.failures}
    return out
