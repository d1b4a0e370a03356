"""One run's report: runs/<id>/report.html with its PNG plots in runs/<id>/plots/."""

from __future__ import annotations

from pathlib import Path

from surgesim.reports import fmt, plots
from surgesim.reports.executions import job_executions, workflow_rows
from surgesim.reports.executions import job_rows as execution_rows
from surgesim.reports.jobs import api_rows, job_rows
from surgesim.reports.html import render
from surgesim.reports.metrics import LAG, LATENCY, RunData
from surgesim.reports.narrative import narrative
from surgesim.rundir import load_run

SUB_COLUMNS = ("published", "delivered", "acked", "nacked", "redelivered", "dead_lettered", "filtered", "backlog")


def slo_rows(summary: dict) -> list[dict]:
    rows = []
    for s in summary.get("slos") or []:
        slo = fmt.parse_slo(s["text"])
        if s.get("not_measured"):  # a load-only run had no data for it: it fails, and says why
            rows.append({"text": s["text"], "holds": False, "observed": "not measured",
                         "threshold": f"{slo.op} {fmt.slo_value(slo, slo.threshold)}" if slo else "",
                         "margin": s.get("why") or ""})
            continue
        rows.append({
            "text": s["text"], "holds": bool(s.get("holds")),
            "observed": fmt.slo_value(slo, s.get("observed")),
            "threshold": f"{slo.op} {fmt.slo_value(slo, slo.threshold)}" if slo else "",
            "margin": fmt.slo_margin(slo, s.get("observed"), bool(s.get("holds"))),
        })
    return rows


def check_rows(summary: dict) -> list[dict]:
    """The implicit checks (surgesim.checks), failed ones first, with the relaxation's reason."""
    from surgesim.checks import show_observed

    rows = [{"name": c.get("name"), "text": c.get("text"), "holds": bool(c.get("holds")),
             "observed": show_observed(c), "detail": c.get("detail") or "", "reason": c.get("reason")}
            for c in summary.get("checks") or []]
    return sorted(rows, key=lambda r: r["holds"])


def slo_thresholds(summary: dict) -> dict[str, list[tuple[str, float]]]:
    """Latency/lag thresholds per path name, for the dashed lines on the percentile plots.
    An SLO on a service ('latency.command') applies to each of its routes."""
    out: dict[str, list[tuple[str, float]]] = {}
    paths = set(summary.get("latency") or {}) | set(summary.get("lag") or {})
    for s in summary.get("slos") or []:
        slo = fmt.parse_slo(s["text"])
        if slo is None or slo.metric not in ("latency", "lag") or slo.func == "drain":
            continue
        label = f"{slo.func} {slo.op} {fmt.duration(slo.threshold)}"
        for p in paths:
            if p == slo.entity or p.startswith(slo.entity + "."):
                out.setdefault(p, []).append((label, slo.threshold))
    return out


def subscription_rows(data: RunData) -> list[dict]:
    s = data.summary
    totals = (s.get("totals") or {}).get("subscriptions") or {}
    balances = ((s.get("conservation") or {}).get("subscriptions") or {})
    rows = []
    for name in sorted(set(totals) | set(balances)):
        t = totals.get(name, {})
        c = balances.get(name, {})
        balance = c.get("balance")
        # A live run cannot count what nobody consumes: its backlog is None and the
        # conservation row says observed: false. That balance is unknown, not a violation.
        observed = c.get("observed", True) and t.get("backlog", 0) is not None
        if balance is None and t and observed:
            balance = t.get("published", 0) - t.get("acked", 0) - t.get("dead_lettered", 0) - t.get("filtered", 0) - t.get("backlog", 0)
        rows.append({"name": name, **{k: t.get(k) for k in SUB_COLUMNS},
                     "peak_backlog": t.get("peak_backlog"), "drain": data.drains.get(name, None),
                     "drained": name in data.drains and data.drains[name] is not None,
                     "balance": balance, "ok": balance == 0, "observed": observed})
    return rows


def service_rows(summary: dict) -> list[dict]:
    services = (summary.get("totals") or {}).get("services") or {}
    return [{"name": n, "instance_seconds": None, **t} for n, t in sorted(services.items())]


def counter_rows(summary: dict) -> list[dict]:
    """What the services reported about their own work (a live run's GET /metrics of each
    service at the end: summary.json live.service_counters), one row per number."""
    counters = ((summary.get("live") or {}).get("service_counters")) or {}
    return [{"service": svc, "name": k, "value": v}
            for svc, nums in sorted(counters.items()) for k, v in sorted(nums.items())]


def path_rows(data: RunData, kind: str) -> list[dict]:
    return [{"path": p, **v} for p, v in data.path_summary(kind).items()]


def wait_rows(summary: dict) -> list[dict]:
    """summary.json `wait` (sim runs): each service, then its channels, with how the
    engine queued the service's arrivals (`engine.nodes`)."""
    waits = summary.get("wait") or {}
    nodes = (summary.get("engine") or {}).get("nodes") or {}
    rows = []
    for path in sorted(waits, key=lambda p: (p.partition(".")[0], "." in p, p)):
        svc, _, channel = path.partition(".")
        engine = ""
        q = nodes.get(svc)
        if not channel and q:
            total = (q.get("vectorised") or 0) + (q.get("per_message") or 0)
            engine = (f"{q.get('vectorised', 0):,} vectorised, {q.get('per_message', 0):,} per message; "
                      f"queue in {q.get('steps_queued', 0):,} of {q.get('steps', 0):,} steps") if total else ""
        rows.append({"path": path, "channel": channel, "engine": engine, **waits[path]})
    return rows


def cost_rows(summary: dict) -> tuple[list[dict], str, str]:
    cost = summary.get("cost") or {}
    day, month = cost.get("per_day") or {}, cost.get("per_month") or {}
    keys = [k for k in day if k != "total"] + (["total"] if "total" in day else [])
    rows = [{"item": k.replace("_", " "), "day": day.get(k), "month": month.get(k, (day.get(k) or 0) * 30),
             "total": k == "total"} for k in keys]
    return rows, cost.get("currency", "USD"), str(cost.get("as_of", ""))


def header(data: RunData) -> dict:
    s = data.summary
    slos = s.get("slos") or []
    checks = s.get("checks") or []
    failed = sum(1 for x in slos if not x.get("holds"))
    failed_checks = sum(1 for x in checks if not x.get("holds"))
    verdict = (s.get("verdict") or ("fail" if failed or failed_checks else "pass")).lower()
    if verdict == "pass":
        text = (f"PASS — all {len(slos)} SLOs met" if slos else "PASS") + (
            f" and all {len(checks)} implicit checks hold" if checks else "")
    else:
        missed = [f"{failed} of {len(slos)} SLOs missed"] if failed or not failed_checks else []
        if failed_checks:
            missed.append(f"{failed_checks} of {len(checks)} implicit checks failed")
        text = "FAIL — " + ", ".join(missed)
    return {
        "scenario": s.get("scenario"), "system": s.get("system"), "plan": s.get("plan"), "seed": s.get("seed"),
        "mode": s.get("mode"), "scales": data.scales, "duration": fmt.duration(data.duration_s),
        "clock": f"{fmt.clock(data.start_clock_s)}–{fmt.clock(data.start_clock_s + data.duration_s, True)}",
        "window": fmt.duration(data.window_s), "verdict": verdict,
        "verdict_text": text,
        "run_id": data.name, "inputs": {k: v for k, v in (s.get("inputs") or {}).items() if v},
        "meta": data.run.meta,
        **_interrupted(s, data),
    }


def _interrupted(s: dict, data: RunData) -> dict:
    """A live run stopped before its end (Ctrl-C, SIGTERM, a dead emulator) wrote what it had
    measured until then: say so where the verdict would be."""
    if not s.get("interrupted"):
        return {}
    at = float(s.get("interrupted_at_s") or 0.0)
    by = s.get("interrupted_by") or "signal"
    return {"verdict": "interrupted",
            "verdict_text": f"INTERRUPTED at {fmt.clock(data.start_clock_s + at)} (scenario {at:.0f} s of "
                            f"{data.duration_s:.0f} s; {'Ctrl-C / SIGTERM' if by == 'signal' else by}): "
                            "partial data until then, no verdict"}


def build_plots(data: RunData, out_dir: Path, *, include_lag: bool = True) -> list[plots.Plot]:
    """Every figure of the single-run report, in reading order."""
    for stale in out_dir.glob("*.png"):  # a plot an earlier build drew must not linger
        stale.unlink()
    if plots.MISSING:
        return [plots.Plot("Plots", note=plots.MISSING)]
    tl = plots.Timeline(data.start_clock_s, data.duration_s, data.events)
    entities = set()
    for key in ("backlog", "published", "requests", "instances", "dead_lettered"):
        entities |= set(data.frame(key).columns)
    colours = plots._palette(sorted(entities))
    thresholds = slo_thresholds(data.summary)
    figures = [
        plots.rates(data, tl, out_dir, colours),
        plots.percentiles(data, tl, out_dir, "latency", thresholds),
        plots.backlog(data, tl, out_dir, colours),
    ]
    zoom = tl.zoom(pad_s=max(1800.0, 0.02 * data.duration_s))
    if zoom is not None:
        lo, hi = zoom.span
        figures.append(plots.backlog(data, zoom, out_dir, colours, "backlog_zoom.png",
                                     f"Backlog around the faults and waves ({fmt.clock(lo)}–{fmt.clock(hi)})"))
    if include_lag:
        figures.append(plots.percentiles(data, tl, out_dir, "lag", thresholds))
    figures += [plots.dead_letters(data, tl, out_dir, colours), plots.instances(data, tl, out_dir, colours)]
    return figures


def build_report(run_dir: str | Path) -> Path:
    """Write run_dir/report.html and run_dir/plots/*.png; return the HTML's path."""
    run = load_run(run_dir)
    data = RunData(run)
    figures = build_plots(data, run.dir / "plots")
    costs, currency, as_of = cost_rows(data.summary)
    cons = data.summary.get("conservation") or {}
    subs = subscription_rows(data)
    executions = job_executions(run.dir)
    job_figure = plots.job_tasks(executions, run.dir / "plots") if executions else None
    return render(
        "run.html", run.dir / "report.html",
        title=f"{data.summary.get('scenario')} · {data.summary.get('plan')} · {data.summary.get('mode')}",
        h=header(data), story=narrative(data), slos=slo_rows(data.summary), checks=check_rows(data.summary),
        not_measured=[n for n in data.summary.get("not_measured") or [] if not n["name"].startswith("slo: ")],
        figures=figures,
        latency=path_rows(data, LATENCY), lag=path_rows(data, LAG), subs=subs, waits=wait_rows(data.summary),
        freshness=[{"path": k, **v} for k, v in sorted((data.summary.get("freshness") or {}).items())],
        conservation_ok=bool(cons.get("ok", all(r["ok"] for r in subs))) and all(r["ok"] for r in subs),
        services=service_rows(data.summary), workflows=workflow_rows(data.summary), counters=counter_rows(data.summary),
        costs=costs, currency=currency, as_of=as_of, jobs=job_rows(run), apis=api_rows(data.summary),
        job_execs=execution_rows(executions), job_figure=job_figure,
    )
