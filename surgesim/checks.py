"""Implicit checks: what every run is judged on besides the scenario's own SLOs.

A run in which things fail must not pass. Whatever a scenario's SLOs say, every run, sim and
live, is also checked for:

    client_errors   per route: the share of answers that are not a success code (2xx or the
                    route's response_status) is at most 1%. 429s are rejections, counted and
                    reported apart (the `rejected` SLO metric judges them); the share is taken
                    over the requests that were not rejected. A request that got no answer at
                    all (a transport error or a client timeout) counts as an error.
    dead_letters    per subscription with a dead-letter policy: nothing dead-lettered, except what declared faults imply:
                    a poison_message of `count` dead-letters exactly `count` on each
                    subscription of its topic that lets its attributes through the filter, is
                    consumed by a service and has a dead-letter policy; a bad_deploy dead-letters
                    the matching messages whose every attempt fell inside the bad window, a
                    number the totals cannot give, so it must be declared
                    (`checks.dead_letters.allow`) and is then required to be > 0 and at most that.
    conservation    per subscription, published = acked + dead-lettered + filtered + expired +
                    backlog (summary.conservation, computed by each engine).
    expired         over every subscription: nothing dropped by message retention (a loss).
    triggers        per trigger: changes = delivered + given_up + pending, and nothing given up
                    (a delivery given up is a loss).
    processes       live only: every process the run started is running at the end, unless a
                    fault stopped it.
    faults          every declared fault was injected (faults.json: none unsupported or failed).
    workflows       per workflow: no execution ended FAILED (summary.totals.workflows: the live
                    run's execution records, the simulator's failed sagas). A compensated
                    execution succeeded: it is counted in `outcomes`, not here.
    jobs            live, per job: no execution failed (a task that used up max_retries, or
                    cancelled at the drain's end).

A scenario relaxes a check only explicitly, with a reason the report shows (`checks:` in the
scenario, surgesim.schema.scenario.Checks). Nothing here does I/O: the input is the summary
dict an engine is about to write, and optionally the fault timeline (faults.json).

Each check is a dict {name, text, implicit: True, observed, holds, detail, reason}:
`text` reads like an SLO line, `detail` names the route, subscription, trigger or process and
gives the counts, `reason` is the scenario's reason when a relaxation applied (else None).
"""

from __future__ import annotations

from typing import Any, Iterable

DEFAULT_MAX_CLIENT_ERROR_SHARE = 0.01
REJECTION = "429"


def _check(name: str, text: str, observed: float | None, holds: bool, detail: str,
           reason: str | None = None) -> dict:
    return {"name": name, "text": text, "implicit": True, "observed": observed, "holds": bool(holds),
            "detail": detail, "reason": reason}


def _pct(share: float) -> str:
    return f"{share * 100:.4g}%"


def _relaxation(scenario: Any, name: str) -> Any:
    checks = getattr(scenario, "checks", None)
    return getattr(checks, name, None) if checks is not None else None


# ---- client errors ------------------------------------------------------------------------


def _success_codes(system: Any, route_key: str) -> set[str]:
    """2xx, plus the route's declared response_status if that is not a 2xx."""
    codes: set[str] = set()
    service, _, route = route_key.partition(".")
    for svc in getattr(system, "services", []) or []:
        if svc.name == service:
            for r in svc.routes:
                if r.name == route:
                    codes.add(str(r.response_status))
    return codes


def _is_success(code: str, extra: set[str]) -> bool:
    # "completed": a flow's row (flow.<name>, surgesim/live/totals.py); its "aborted" is an error
    return code in extra or code == "completed" or (len(code) == 3 and code.startswith("2") and code.isdigit())


def _sends_requests(scenario: Any) -> bool:
    traffic = getattr(scenario, "traffic", None)
    return any(getattr(s, "request", None) is not None or getattr(s, "flow", None) is not None
               for s in getattr(traffic, "sources", []) or [])


def client_error_checks(summary: dict, scenario: Any, system: Any) -> list[dict]:
    routes = (summary.get("totals") or {}).get("routes")
    relax = _relaxation(scenario, "client_errors")
    if routes is None:
        if not _sends_requests(scenario):
            return []
        return [_check("client_errors", "client_errors(every route) <= 1%", None, False,
                       "the run recorded no per-route outcomes (summary.totals.routes), so client errors "
                       "cannot be judged")]
    out = []
    for key in sorted(routes):
        r = routes[key] or {}
        requests = int(r.get("requests") or 0)
        status = {str(k): int(v or 0) for k, v in (r.get("status") or {}).items()}
        rejected = max(int(r.get("rejected") or 0), status.get(REJECTION, 0))
        extra = _success_codes(system, key)
        bad_codes = {c: n for c, n in status.items() if n and c != REJECTION and not _is_success(c, extra)}
        unanswered = max(0, requests - sum(status.values()))
        not_ok = sum(bad_codes.values()) + unanswered
        judged = max(requests - rejected, 0)
        share = not_ok / judged if judged else 0.0
        limit, reason = DEFAULT_MAX_CLIENT_ERROR_SHARE, None
        if relax is not None:
            if key in relax.routes:
                limit, reason = relax.routes[key], relax.reason
            elif relax.max_share is not None:
                limit, reason = relax.max_share, relax.reason
        ok_label = "2xx" if not (extra - {c for c in extra if c.startswith("2")}) else "2xx/" + "/".join(sorted(extra))
        parts = ", ".join(f"{c}: {n:,}" for c, n in sorted(bad_codes.items()))
        if unanswered:
            parts = (parts + ", " if parts else "") + f"no answer: {unanswered:,}"
        detail = (f"{key}: {not_ok:,} of {judged:,} answers not {ok_label}" + (f" ({parts})" if parts else "")
                  + f"; {REJECTION}: {rejected:,} of {requests:,} requests")
        if reason is not None:
            detail += f"; relaxed to {_pct(limit)}: {reason}"
        out.append(_check(f"client_errors.{key}", f"client_errors({key}) <= {_pct(limit)}", share,
                          share <= limit + 1e-12, detail, reason))
    return out


# ---- dead letters ---------------------------------------------------------------------------


def _passes_filter(sub: Any, attributes: dict) -> bool:
    if not getattr(sub, "filter", None):
        return True
    from surgesim.pubsub_filter import parse_filter

    return bool(parse_filter(sub.filter)(attributes))


def _fails_poison(sub: Any, system: Any) -> bool:
    """A poison message dead-letters only where a service consumes it under a DLQ policy."""
    services = {s.name for s in getattr(system, "services", []) or []}
    return (getattr(sub, "dead_letter", None) is not None and getattr(sub, "consumer", None) in services
            and getattr(sub, "delivery", "push") != "bigquery")


def dead_letter_expectations(scenario: Any, system: Any) -> tuple[dict[str, int], dict[str, list[str]]]:
    """({subscription: dead letters the poison faults imply}, {subscription: bad_deploy faults on it})."""
    poison: dict[str, int] = {}
    bad: dict[str, list[str]] = {}
    subs = list(getattr(system, "subscriptions", []) or [])
    for f in getattr(scenario, "faults", []) or []:
        if f.kind == "poison_message":
            for s in subs:
                if s.topic == f.topic and _fails_poison(s, system) and _passes_filter(s, dict(f.attributes)):
                    poison[s.name] = poison.get(s.name, 0) + int(f.count)
        elif f.kind == "bad_deploy":
            for s in subs:
                if getattr(s, "consumer", None) == f.target and getattr(s, "dead_letter", None) is not None:
                    bad.setdefault(s.name, []).append(f"bad_deploy on {f.target} at {f.at:g}s")
    return poison, bad


def dead_letter_checks(summary: dict, scenario: Any, system: Any) -> list[dict]:
    subs = (summary.get("totals") or {}).get("subscriptions") or {}
    relax = _relaxation(scenario, "dead_letters")
    allow = dict(relax.allow) if relax is not None else {}
    poison, bad = dead_letter_expectations(scenario, system)
    policies = {s.name for s in getattr(system, "subscriptions", []) or [] if getattr(s, "dead_letter", None)}
    out = []
    for name in sorted(subs):
        dl = int((subs[name] or {}).get("dead_lettered") or 0)
        if name not in policies and not dl and name not in allow:
            continue  # no dead-letter policy: nothing can be dead-lettered there
        expected = poison.get(name, 0)
        allowed = allow.get(name)
        reason = relax.reason if (relax is not None and allowed is not None) else None
        why = []
        if expected:
            why.append(f"{expected:,} from poison_message")
        if name in bad:
            if allowed is None:
                out.append(_check(
                    f"dead_letters.{name}", f"dead_letters({name}) declared for bad_deploy", dl, False,
                    f"{name}: {dl:,} dead-lettered; {', '.join(bad[name])} targets it, and how many messages "
                    f"exhaust their attempts inside the bad window cannot be derived from the totals: declare "
                    f"checks.dead_letters.allow: {{{name}: N}} with a reason"))
                continue
            lo, hi = expected + (1 if allowed > 0 else 0), expected + allowed
            why.append(f"1..{allowed:,} declared for {', '.join(bad[name])}" if allowed else
                       f"0 declared for {', '.join(bad[name])}")
            text = f"dead_letters({name}) in {lo:,}..{hi:,}"
        elif allowed is not None:
            lo, hi = expected, expected + allowed
            why.append(f"up to {allowed:,} allowed")
            text = f"dead_letters({name}) in {lo:,}..{hi:,}" if lo else f"dead_letters({name}) <= {hi:,}"
        else:
            lo = hi = expected
            text = f"dead_letters({name}) == {expected:,}"
        holds = lo <= dl <= hi
        detail = f"{name}: {dl:,} dead-lettered" + (f"; expected {', '.join(why)}" if why else "; expected none")
        if expected and dl < expected:
            detail += f" ({expected - dl:,} poison messages not dead-lettered by the end)"
        if reason is not None:
            detail += f"; relaxed: {reason}"
        out.append(_check(f"dead_letters.{name}", text, float(dl), holds, detail, reason))
    return out


# ---- losses ---------------------------------------------------------------------------------


def conservation_check(summary: dict) -> list[dict]:
    cons = summary.get("conservation")
    text = "conservation(every subscription) balanced"
    if not isinstance(cons, dict) or "ok" not in cons:
        return [_check("conservation", text, None, False, "the run recorded no conservation (summary.conservation)")]
    rows = cons.get("subscriptions") or {}
    off = []
    for name in sorted(rows):
        row = rows[name] or {}
        balance = row.get("balance")
        if balance not in (None, 0):
            off.append(f"{name}: balance {balance:+,} (published {row.get('published', 0):,})")
        elif row.get("backlog_in_queues") is not None and row.get("backlog_in_queues") != row.get("backlog"):
            why = (row.get("disagreement") or "").partition("; ")[2]  # e.g. a consumer outside the run
            off.append(f"{name}: backlog {row.get('backlog'):,} by the counters, {row['backlog_in_queues']:,} in the queues"
                       + (f" ({why})" if why else ""))
        elif balance == 0 and row.get("backlog") == 0 and (row.get("emulator_visible") or 0) > 0:
            off.append(f"{name}: backlog 0 by the ledgers, {row['emulator_visible']:,} still visible in the emulator")
    published = sum(int((r or {}).get("published") or 0) for r in rows.values())
    holds = bool(cons["ok"]) and not off
    if holds:
        detail = f"balanced on {len(rows)} subscriptions over {published:,} messages"
    elif off:
        detail = "; ".join(off)
    else:
        detail = "the engine reported conservation broken"
    return [_check("conservation", text, float(len(off)), holds, detail)]


def expired_checks(summary: dict, scenario: Any) -> list[dict]:
    """One check over every subscription: a message dropped by retention is lost."""
    subs = (summary.get("totals") or {}).get("subscriptions") or {}
    if not subs:
        return []
    relax = _relaxation(scenario, "lost")
    allow = dict(relax.allow) if relax is not None else {}
    over, within, total = [], [], 0
    for name in sorted(subs):
        expired = int((subs[name] or {}).get("expired") or 0)
        total += expired
        limit = allow.get(name, 0)
        if expired > limit:
            over.append(f"{name}: {expired:,} expired" + (f" (allowed {limit:,})" if limit else ""))
        elif expired:
            within.append(f"{name}: {expired:,} expired (allowed {limit:,})")
    used = relax is not None and any(allow.get(n) is not None for n in subs)
    reason = relax.reason if used else None
    if over:
        detail = "messages dropped by retention before they were acked: " + "; ".join(over + within)
    elif within:
        detail = "; ".join(within)
    else:
        detail = f"none expired on {len(subs)} subscriptions"
    if reason is not None:
        detail += f"; relaxed: {reason}"
    text = "expired(every subscription) == 0" if not allow else "expired(every subscription) <= allowed"
    return [_check("expired", text, float(total), not over, detail, reason)]


def _skipped_all(summary: dict, system: Any, names: list[str]) -> bool:
    """Live: triggers whose target service was not run (listed as skipped) record nothing."""
    skipped = set(((summary.get("live") or {}).get("skipped") or {}))
    target = {t.name: getattr(t, "target", None) for t in getattr(system, "triggers", []) or []}
    return all(target.get(n) in skipped for n in names)


def trigger_checks(summary: dict, scenario: Any, system: Any) -> list[dict]:
    triggers = (summary.get("totals") or {}).get("triggers")
    # a Pub/Sub trigger is a push subscription: its losses are the subscriptions' checks
    declared = [t.name for t in getattr(system, "triggers", []) or [] if getattr(t, "kind", None) != "pubsub"]
    unrecorded = [n for n in declared if n not in (triggers or {})]
    if unrecorded and (summary.get("mode") != "live" or not _skipped_all(summary, system, unrecorded)):
        return [_check("triggers", "given_up(every trigger) == 0", None, False,
                       f"the run recorded no trigger deliveries (summary.totals.triggers) for {', '.join(unrecorded)}")]
    if triggers is None:
        return []
    relax = _relaxation(scenario, "lost")
    allow = dict(relax.allow) if relax is not None else {}
    out = []
    for name in sorted(triggers):
        t = triggers[name] or {}
        changes, delivered = int(t.get("changes") or 0), int(t.get("delivered") or 0)
        given_up, pending = int(t.get("given_up") or 0), int(t.get("pending") or 0)
        balance = changes - delivered - given_up - pending
        allowed = allow.get(name)
        limit = allowed or 0
        reason = relax.reason if allowed is not None else None
        detail = (f"trigger {name}: {changes:,} changes, {delivered:,} delivered, {given_up:,} given up, "
                  f"{pending:,} pending")
        if balance:
            detail += f"; {balance:+,} unaccounted for"
        if reason is not None:
            detail += f"; up to {limit:,} given up allowed: {reason}"
        detail += "" if balance else " (changes = delivered + given up + pending)"
        text = f"given_up(trigger {name}) == 0" if not limit else f"given_up(trigger {name}) <= {limit:,}"
        out.append(_check(f"triggers.{name}", text,
                          float(given_up), balance == 0 and given_up <= limit, detail, reason))
    return out


# ---- workflow and job executions -------------------------------------------------------------


def _allowed_failures(summary: dict, scenario: Any, group: str, failed_of, what: str, unit: str) -> list[dict]:
    """One check per entity of totals[group]: failed_of(totals) <= what the scenario allows."""
    totals = (summary.get("totals") or {}).get(group) or {}
    relax = _relaxation(scenario, group)
    allow = dict(relax.allow) if relax is not None else {}
    out = []
    for name in sorted(totals):
        t = totals[name] or {}
        failed, of = failed_of(t)
        allowed = allow.get(name)
        limit = allowed or 0
        reason = relax.reason if allowed is not None else None
        detail = f"{what} {name}: {failed:,} of {of:,} {unit} failed"
        examples = t.get("failed_examples") or []
        if failed and examples:
            detail += "; e.g. " + " | ".join(f"{e.get('execution_id')}: {e.get('error')}" for e in examples[:2])
        if t.get("records"):
            detail += f" (records: {t['records']})"
        if reason is not None:
            detail += f"; up to {limit:,} allowed: {reason}"
        text = f"failed({what} {name}) == 0" if not limit else f"failed({what} {name}) <= {limit:,}"
        out.append(_check(f"{group}.{name}", text, float(failed), failed <= limit, detail, reason))
    return out


def workflow_checks(summary: dict, scenario: Any) -> list[dict]:
    """Per workflow, executions that ended FAILED (live: `failed` of the execution records;
    sim: sagas whose compensation failed)."""
    return _allowed_failures(summary, scenario, "workflows",
                             lambda t: (int(t.get("failed") or 0), int(t.get("executions", t.get("started")) or 0)),
                             "workflow", "executions")


def job_checks(summary: dict, scenario: Any) -> list[dict]:
    """Per job, failed executions. Live only: the simulator's totals count failed attempts
    (`tasks_failed`, retried ones included), not executions, so there is nothing to judge."""
    jobs = (summary.get("totals") or {}).get("jobs") or {}
    live = {n: t for n, t in jobs.items() if isinstance(t, dict) and "failed_executions" in t}
    return _allowed_failures({"totals": {"jobs": live}}, scenario, "jobs",
                             lambda t: (int(t["failed_executions"] or 0), int(t.get("executions") or 0)),
                             "job", "executions")


# ---- processes and faults -------------------------------------------------------------------


def process_checks(summary: dict) -> list[dict]:
    procs = summary.get("processes")
    if not procs:
        return []
    out = []
    for name in sorted(procs):
        p = procs[name] or {}
        kind = p.get("kind") or "process"
        running, by_fault = bool(p.get("running_at_end")), bool(p.get("stopped_by_fault"))
        code = p.get("exit_code")
        if running:
            detail = f"{kind} {name}: running at the end"
        elif by_fault:
            detail = f"{kind} {name}: stopped by a declared fault"
        else:
            tail = [str(line) for line in (p.get("log_tail") or [])][-5:]
            detail = f"{kind} {name}: exited with code {code} before the end" + (
                "; last log lines: " + " | ".join(tail) if tail else "")
        out.append(_check(f"processes.{name}", f"running_at_end({kind} {name})",
                          None if code is None else float(code), running or by_fault, detail))
    return out


def _not_injected(events: Iterable[dict]) -> list[str]:
    out = []
    for e in events:
        if not isinstance(e, dict):
            out.append(str(e))
            continue
        d = e.get("details") or {}
        why = None
        if e.get("unsupported") or d.get("unsupported"):
            why = f"unsupported: {d.get('reason') or e.get('reason') or 'not applied'}"
        elif e.get("failed") or d.get("failed"):
            why = f"failed: {d.get('failed') or e.get('failed')}"
        if why is not None:
            start = e.get("start_s")
            at = f" at {float(start):g}s" if isinstance(start, (int, float)) else ""
            out.append(f"{e.get('kind', 'fault')} on {e.get('target') or '?'}{at} {why}")
    return out


def fault_checks(summary: dict, scenario: Any, faults: list[dict] | None) -> list[dict]:
    """Every declared fault recorded in the timeline, and none of them unsupported or failed."""
    if faults is None and "faults_unsupported" not in summary:
        return []
    recorded = [e for e in faults or [] if isinstance(e, dict) and e.get("kind") != "wave"]
    problems = _not_injected(recorded)
    for line in _not_injected(e if isinstance(e, dict) else {"kind": str(e), "unsupported": True}
                              for e in summary.get("faults_unsupported") or []):
        if line not in problems:
            problems.append(line)
    if faults is not None:
        seen: dict[tuple, int] = {}
        for e in recorded:
            key = (e.get("kind"), e.get("target") or "")
            seen[key] = seen.get(key, 0) + 1
        for f in getattr(scenario, "faults", []) or []:
            key = (f.kind, f.target or f.topic or "")
            if seen.get(key, 0) > 0:
                seen[key] -= 1
            else:
                problems.append(f"{f.kind} on {key[1] or '?'} at {f.at:g}s declared but never recorded as injected")
    text = "injected(every declared fault)"
    if problems:
        return [_check("faults", text, float(len(problems)), False, "; ".join(problems))]
    return [_check("faults", text, 0.0, True, f"{len(recorded)} fault(s) injected as declared")]


# ---- the verdict ----------------------------------------------------------------------------


def implicit_checks(summary: dict, scenario: Any, system: Any, faults: list[dict] | None = None) -> list[dict]:
    """Every implicit check for a finished run, in report order. `faults` is the fault timeline
    (faults.json) when the caller has it; without it only summary.faults_unsupported is judged."""
    return (client_error_checks(summary, scenario, system)
            + dead_letter_checks(summary, scenario, system)
            + conservation_check(summary)
            + expired_checks(summary, scenario)
            + trigger_checks(summary, scenario, system)
            + process_checks(summary)
            + workflow_checks(summary, scenario)
            + job_checks(summary, scenario)
            + fault_checks(summary, scenario, faults))


def final_verdict(slos: list[dict], checks: list[dict]) -> str:
    """pass only when every SLO holds and every implicit check holds."""
    return "pass" if all(bool(r.get("holds")) for r in list(slos) + list(checks)) else "fail"


def show_observed(check: dict) -> str:
    """The observed value as the verdict table prints it."""
    value = check.get("observed")
    if value is None:
        return "-"
    if str(check.get("name", "")).startswith("client_errors"):
        return _pct(float(value))
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.4g}"


def failed_lines(checks: list[dict]) -> list[str]:
    """One line per failed check, for the console and CI logs."""
    return [f"FAILED {c['name']}: {c['detail']}" for c in checks if not c.get("holds")]


__all__ = ["DEFAULT_MAX_CLIENT_ERROR_SHARE", "dead_letter_expectations", "failed_lines", "final_verdict",
           "implicit_checks", "job_checks", "show_observed", "workflow_checks"]
