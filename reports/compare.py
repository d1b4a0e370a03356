"""Plan comparison: several runs of one scenario under different plans, side by side, with
the cheapest plan that meets every SLO highlighted."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from surgesim.reports import fmt, plots
from surgesim.reports.html import render
from surgesim.reports.metrics import RunData
from surgesim.reports.overlay import Line, Panel, overlay, run_colours
from surgesim.reports.single import slo_thresholds
from surgesim.rundir import load_run


@dataclass
class Column:
    """One run's numbers for the comparison table."""

    label: str
    data: RunData
    colour: str
    link: str | None
    slos_met: int = 0
    slos: int = 0
    verdict: str = ""
    cost_day: float | None = None
    cost_month: float | None = None
    currency: str = "USD"
    p99: dict[str, float] = field(default_factory=dict)
    peak_backlog: tuple[float, str] = (0.0, "")
    peak_drain: float | None = 0.0
    """The drain of that same backlog (surgesim.slo.drain_time): peak and drain describe one thing."""
    drain: tuple[float | None, str] = (0.0, "")
    dead_lettered: int = 0
    rejected: int = 0
    peak_instances: float = 0.0


def _labels(runs: list[RunData]) -> list[str]:
    plans = [str(r.summary.get("plan")) for r in runs]
    return [p if plans.count(p) == 1 else f"{p} ({r.name})" for p, r in zip(plans, runs)]


def column(label: str, data: RunData, colour: str, out_dir: Path) -> Column:
    s = data.summary
    slos = s.get("slos") or []
    cost = s.get("cost") or {}
    subs = (s.get("totals") or {}).get("subscriptions") or {}
    services = (s.get("totals") or {}).get("services") or {}
    peaks = data.peak_backlog()
    peak = max(((p, n) for n, (p, _) in peaks.items()), default=(0.0, ""))
    drains = data.drains
    undrained = sorted((n for n, d in drains.items() if d is None and peaks.get(n, (0, 0))[0] > 0),
                       key=lambda n: -peaks[n][0])
    if undrained:
        drain = (None, undrained[0] + (f" and {len(undrained) - 1} more" if len(undrained) > 1 else ""))
    else:
        drain = max(((d, n) for n, d in drains.items() if d is not None), default=(0.0, ""))
    report = data.run.dir / "report.html"
    total_instances = data.total_instances()
    return Column(
        label=label, data=data, colour=colour,
        link=os.path.relpath(report, out_dir) if report.exists() else None,
        slos_met=sum(1 for x in slos if x.get("holds")), slos=len(slos),
        verdict=str(s.get("verdict") or ("pass" if all(x.get("holds") for x in slos) else "fail")),
        cost_day=(cost.get("per_day") or {}).get("total"), cost_month=(cost.get("per_month") or {}).get("total"),
        currency=cost.get("currency", "USD"),
        p99={p: v.get("p99") for p, v in data.path_summary("latency").items()},
        peak_backlog=peak, peak_drain=drains.get(peak[1], 0.0) if peak[1] else 0.0, drain=drain,
        dead_lettered=sum(int(t.get("dead_lettered") or 0) for t in subs.values()),
        rejected=sum(int(t.get("rejected") or 0) for t in services.values()),
        peak_instances=float(total_instances.max()) if len(total_instances) else
        float(sum(t.get("peak_instances") or 0 for t in services.values())),
    )


def cheapest_passing(columns: list[Column]) -> Column | None:
    passing = [c for c in columns if c.verdict == "pass" and c.cost_day is not None]
    return min(passing, key=lambda c: c.cost_day) if passing else None


def table(columns: list[Column]) -> list[dict]:
    """Rows of (metric, one cell per run); each cell has text and an optional class."""
    rows: list[dict] = []

    def row(name: str, cells: list[tuple[str, str]], group: str = "") -> None:
        rows.append({"name": name, "cells": [{"text": t, "cls": c} for t, c in cells], "group": group})

    row("verdict", [(c.verdict.upper(), "pass" if c.verdict == "pass" else "fail") for c in columns])
    row("SLOs met", [(f"{c.slos_met} of {c.slos}", "") for c in columns])
    texts = []
    for c in columns:
        for x in c.data.summary.get("slos") or []:
            if x["text"] not in texts:
                texts.append(x["text"])
    for text in texts:
        cells = []
        slo = fmt.parse_slo(text)
        for c in columns:
            hit = next((x for x in c.data.summary.get("slos") or [] if x["text"] == text), None)
            if hit is None:
                cells.append(("—", ""))
            else:
                cells.append((fmt.slo_value(slo, hit.get("observed")), "ok" if hit.get("holds") else "bad"))
        row(text, cells, "slo")
    paths = sorted({p for c in columns for p in c.p99})
    for p in paths:
        row(f"p99 {p}", [(fmt.duration(c.p99.get(p)) if c.p99.get(p) is not None else "—", "") for c in columns],
            "latency")
    row("peak backlog", [(f"{fmt.count(c.peak_backlog[0])} ({c.peak_backlog[1]})" if c.peak_backlog[1] else "0", "")
                         for c in columns])
    row("drain of that backlog", [(("never drained", "bad") if c.peak_drain is None else
                                   (fmt.duration(c.peak_drain), "")) if c.peak_backlog[1] else ("—", "")
                                  for c in columns])
    row("drain time (slowest subscription)",
        [((f"not drained ({c.drain[1]})", "bad") if c.drain[0] is None else
          (f"{fmt.duration(c.drain[0])}" + (f" ({c.drain[1]})" if c.drain[0] else ""), "")) for c in columns])
    row("dead-lettered", [(fmt.count(c.dead_lettered), "warn" if c.dead_lettered else "") for c in columns])
    row("rejected (429)", [(fmt.count(c.rejected), "bad" if c.rejected else "") for c in columns])
    row("peak instances (all services)", [(fmt.count(c.peak_instances), "") for c in columns])
    row("cost per day", [(fmt.money(c.cost_day, c.currency), "") for c in columns], "cost")
    row("cost per month", [(fmt.money(c.cost_month, c.currency), "") for c in columns], "cost")
    return rows


def figures(columns: list[Column], tl: plots.Timeline, out_dir: Path) -> list[plots.Plot]:
    # the subscriptions and paths where plans differ most are the interesting ones
    peak_by_sub: dict[str, float] = {}
    for c in columns:
        for sub, (peak, _t) in c.data.peak_backlog().items():
            peak_by_sub[sub] = max(peak_by_sub.get(sub, 0.0), peak)
    subs = [s for s, p in sorted(peak_by_sub.items(), key=lambda kv: -kv[1]) if p > 0][:4]
    backlog_panels = []
    for sub in subs:
        lines = []
        for c in columns:
            f = c.data.frame("backlog")
            if sub in f:
                s = f[sub].dropna()
                lines.append(Line(c.label, s.index.to_numpy() + c.data.window_s, s.to_numpy(), c.colour))
        backlog_panels.append(Panel(sub, lines))

    worst: dict[str, float] = {}
    for c in columns:
        for p, v in c.p99.items():
            if v is not None:
                worst[p] = max(worst.get(p, 0.0), v)
    thresholds = slo_thresholds(columns[0].data.summary)
    paths = sorted(worst, key=lambda p: (p not in thresholds, -worst[p]))[:4]
    latency_panels = []
    for p in paths:
        lines = []
        for c in columns:
            pct = c.data.percentiles
            rows = pct[pct["path"] == f"latency/{p}"].sort_values("time_s")
            lines.append(Line(c.label, rows["time_s"].to_numpy() + c.data.bin_s / 2, rows["p99"].to_numpy(), c.colour))
        th = thresholds.get(p)
        latency_panels.append(Panel(p, lines, (th[0][0], th[0][1]) if th else None))

    inst_lines = []
    for c in columns:
        total = c.data.total_instances()
        inst_lines.append(Line(c.label, total.index.to_numpy() + c.data.window_s, total.to_numpy(), c.colour))
    return [
        overlay("Backlog, largest subscriptions", backlog_panels, tl, out_dir, "compare_backlog.png",
                ylabel="messages", auto_log=True, caption="Level at each window's end, one line per plan.",
                empty="No plan built a backlog on any subscription."),
        overlay("p99 request latency per path", latency_panels, tl, out_dir, "compare_latency.png", ylabel="p99",
                log=True, durations=True, caption="p99 of every sample per bin; paths with SLOs first.",
                empty="No latency samples in these runs."),
        overlay("Instances, all services together", [Panel("total instances", inst_lines)], tl, out_dir,
                "compare_instances.png", ylabel="instances", caption="Sum over services at each window's end.",
                empty="No instance counts in these runs."),
    ]


def build_comparison(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Write out_dir/comparison.html (+ plots/) comparing runs, typically one scenario
    under several plans. Returns the HTML's path."""
    if len(run_dirs) < 2:
        raise ValueError("a comparison needs at least two run directories")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [RunData(load_run(d)) for d in run_dirs]
    colours = run_colours(len(runs))
    columns = [column(label, r, col, out_dir) for label, r, col in zip(_labels(runs), runs, colours)]
    best = cheapest_passing(columns)
    scenarios = sorted({str(r.summary.get("scenario")) for r in runs})
    modes = sorted({str(r.summary.get("mode")) for r in runs})
    first = runs[0]
    tl = plots.Timeline(first.start_clock_s, max(r.duration_s for r in runs), first.events)
    plot_dir = out_dir / "plots"
    for stale in plot_dir.glob("compare_*.png"):
        stale.unlink()
    figs = figures(columns, tl, plot_dir)
    if best is not None:
        others = [c for c in columns if c is not best and c.verdict == "pass" and c.cost_day]
        saving = ""
        if others:
            nxt = min(others, key=lambda c: c.cost_day)
            saving = f", {fmt.money(nxt.cost_day - best.cost_day, best.currency)}/day less than {nxt.label}"
        banner = ("pass", f"Cheapest plan meeting all SLOs: {best.label} at "
                          f"{fmt.money(best.cost_day, best.currency)}/day{saving}")
    else:
        most = max(columns, key=lambda c: (c.slos_met, -(c.cost_day or math.inf)))
        banner = ("fail", f"No plan met all SLOs; closest: {most.label} ({most.slos_met} of {most.slos})")
    warnings = []
    if len(scenarios) > 1:
        warnings.append(f"These runs are of different scenarios ({', '.join(scenarios)}): the numbers are not like for like.")
    if len(modes) > 1:
        warnings.append("These runs mix sim and live; for sim-vs-live accuracy use a calibration report "
                        "(surgesim report SIM LIVE --out DIR --kind calibrate).")
    return render(
        "comparison.html", out_dir / "comparison.html",
        title=f"{' / '.join(scenarios)}: {len(columns)} plans compared", scenarios=scenarios, columns=columns,
        best=best, banner=banner, rows=table(columns), figures=figs, warnings=warnings,
        clock=f"{fmt.clock(tl.start_clock_s)}–{fmt.clock(tl.start_clock_s + tl.duration_s)}",
    )


def calibration_pair(summaries: list[dict]) -> tuple[int, int] | None:
    """(sim index, live index) when the runs are one sim and one live run of one scenario."""
    if len(summaries) != 2:
        return None
    modes = [s.get("mode") for s in summaries]
    if sorted(str(m) for m in modes) != ["live", "sim"] or summaries[0].get("scenario") != summaries[1].get("scenario"):
        return None
    return (modes.index("sim"), modes.index("live"))
