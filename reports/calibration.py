"""Calibration: one sim run and one live run of the same scenario, overlaid, with the
relative error of the simulator on the numbers that matter (peak backlog, drain time,
p50 and p99 per path, each Cloud Run Job's duration).

A live run usually sends a fraction of the volume (scales.rate_scale) in compressed time
(scales.time_scale). Both runs record time in scenario seconds, so curves align on the
scenario clock as they are. Counts (backlog) are compared at the sim's scale: the live
values are multiplied by sim rate_scale / live rate_scale. Latencies are compared as
recorded: a request takes as long at any rate scale if the system is not saturated."""

from __future__ import annotations

import math
import statistics
from pathlib import Path


from surgesim.reports import fmt, plots
from surgesim.reports.html import render
from surgesim.reports.metrics import LAG, LATENCY, RunData
from surgesim.reports.overlay import Line, Panel, overlay
from surgesim.reports.single import slo_thresholds
from surgesim.rundir import load_run

SIM_COLOUR = "#1f77b4"
LIVE_COLOUR = "#d62728"
GOOD, FAIR = 0.10, 0.30


def relative_error(sim: float | None, live: float | None) -> float | None:
    """(live - sim) / sim: +20% means live was 20% higher than the simulator predicted."""
    if sim is None or live is None or not (math.isfinite(sim) and math.isfinite(live)):
        return None
    if sim == 0:
        return 0.0 if live == 0 else None
    return (live - sim) / sim


MISS = math.inf
"""The score of a one-sided miss: the simulator predicts 0 where live measured something,
or one run drained and the other did not. Counted (as worse than any bound), never dropped."""


def score(row: dict) -> float | None:
    """|relative error| of a row for the median; MISS for a one-sided miss; None for a row
    with nothing to score (both runs not drained)."""
    if row["err"] is not None:
        return abs(row["err"])
    return MISS if row.get("cls") == "bad" else None


def median_error(table: list[dict]) -> tuple[float | None, int]:
    """Median |relative error| over every scored row of a calibration table, and how many."""
    errs = [e for e in (score(r) for r in table) if e is not None]
    return (statistics.median(errs) if errs else None), len(errs)


def grade(err: float | None) -> str:
    if err is None:
        return ""
    return "ok" if abs(err) <= GOOD else "warn" if abs(err) <= FAIR else "bad"


def _row(metric: str, entity: str, sim: float | None, live: float | None, show) -> dict:
    err = relative_error(sim, live)
    miss = err is None and sim == 0 and live is not None and live > 0
    return {"metric": metric, "entity": entity, "sim": show(sim), "live": show(live), "err": err,
            "err_text": fmt.percent(err) if err is not None else ("miss (sim 0)" if miss else "—"),
            "cls": "bad" if miss else grade(err)}


def rows(sim: RunData, live: RunData, factor: float) -> list[dict]:
    out = []
    sim_peaks, live_peaks = sim.peak_backlog(), live.peak_backlog()
    for sub in sorted(set(sim_peaks) & set(live_peaks)):
        if sim_peaks[sub][0] == 0 and live_peaks[sub][0] == 0:
            continue  # nothing to compare; listed rows stay the ones a reader should look at
        out.append(_row("peak backlog", sub, sim_peaks[sub][0], live_peaks[sub][0] * factor, fmt.count))
    for sub in sorted(set(sim.drains) & set(live.drains)):
        if (sim_peaks.get(sub, (0,))[0] or 0) > 0 or (live_peaks.get(sub, (0,))[0] or 0) > 0:
            s, l = sim.drains[sub], live.drains[sub]
            if s == 0 and l == 0:
                continue
            row = _row("drain time", sub, s, l, lambda v: "not drained" if v is None else fmt.duration(v))
            if s is None or l is None:
                row["err_text"] = "both not drained" if s is None and l is None else "one not drained"
                row["cls"] = "" if s is None and l is None else "bad"
            out.append(row)
    s_jobs, l_jobs = sim.run.jobs, live.run.jobs  # jobs.json: scenario seconds in both
    for job in sorted(set(s_jobs) & set(l_jobs)):
        s, l = s_jobs[job].get("duration_s"), l_jobs[job].get("duration_s")
        row = _row("job duration", job, s, l, lambda v: "did not finish" if v is None else fmt.duration(v))
        states = s_jobs[job].get("state"), l_jobs[job].get("state")
        if states[0] != states[1]:  # e.g. the simulator's tasks gave up where live ones retried
            row["entity"] = f"{job} (sim {states[0]}, live {states[1]})"
            row["cls"] = "bad"
        out.append(row)
    for kind, label in ((LATENCY, "latency"), (LAG, "lag")):
        s_paths, l_paths = sim.path_summary(kind), live.path_summary(kind)
        for path in sorted(set(s_paths) & set(l_paths)):
            for q in ("p50", "p99"):
                out.append(_row(f"{label} {q}", path, s_paths[path].get(q), l_paths[path].get(q), fmt.duration))
    return out


def figures(sim: RunData, live: RunData, factor: float, tl: plots.Timeline, out_dir: Path) -> list[plots.Plot]:
    peaks = {s: max(p, live.peak_backlog().get(s, (0.0, 0))[0] * factor) for s, (p, _t) in sim.peak_backlog().items()}
    subs = [s for s, p in sorted(peaks.items(), key=lambda kv: -kv[1]) if p > 0][:4]
    backlog = []
    for sub in subs:
        lines = []
        for data, label, colour, style, k in ((sim, "sim", SIM_COLOUR, "-", 1.0),
                                               (live, f"live × {factor:g}", LIVE_COLOUR, "--", factor)):
            f = data.frame("backlog")
            if sub in f:
                s = f[sub].dropna()
                lines.append(Line(label, s.index.to_numpy() + data.window_s, s.to_numpy() * k, colour, style))
        backlog.append(Panel(sub, lines))
    s_paths, l_paths = sim.path_summary(LATENCY), live.path_summary(LATENCY)
    with_slo = slo_thresholds(sim.summary)
    common = sorted(set(s_paths) & set(l_paths), key=lambda p: (p not in with_slo, -(s_paths[p].get("count") or 0)))[:4]
    latency = []
    for path in common:
        lines = []
        for data, label, colour, style in ((sim, "sim", SIM_COLOUR, "-"), (live, "live", LIVE_COLOUR, "--")):
            pct = data.percentiles
            r = pct[pct["path"] == f"latency/{path}"].sort_values("time_s")
            x = r["time_s"].to_numpy() + data.bin_s / 2
            lines.append(Line(f"{label} p99", x, r["p99"].to_numpy(), colour, style))
            lines.append(Line(f"{label} p50", x, r["p50"].to_numpy(), colour, ":" if style == "-" else "-."))
        latency.append(Panel(path, lines))
    return [
        overlay("Backlog: sim vs live", backlog, tl, out_dir, "calibration_backlog.png", ylabel="messages",
                auto_log=True, caption=f"Solid: sim. Dashed: live, multiplied by {factor:g} to the sim's rate scale.",
                empty="Neither run built a backlog."),
        overlay("Request latency: sim vs live (p50 and p99)", latency, tl, out_dir, "calibration_latency.png",
                ylabel="latency", log=True, durations=True,
                caption="Blue: sim, red: live; p99 solid/dashed, p50 dotted/dash-dot. Paths with SLOs first, then the busiest.",
                empty="The runs share no latency path."),
    ]


def markdown(title: str, headline: str, table: list[dict], fit: dict | None, role: str | None) -> str:
    """The calibration as a markdown section (for docs, CI logs and pull requests)."""
    out = [f"## {title}", ""]
    if role:
        out += [role, ""]
    out += [f"**{headline}**", "", "| measure | subscription / path | sim | live | relative error |",
            "| --- | --- | --- | --- | --- |"]
    out += [f"| {r['metric']} | {r['entity']} | {r['sim']} | {r['live']} | {r['err_text']} |" for r in table]
    if fit:
        out += ["", "What the fit added (an empirical delay per path: a sleep step of its route or handler, or "
            "the plan's write_latency / delivery_latency; its p50 / p99):", ""]
        out += [f"- {f['path']} ({f['target']}): p50 {fmt.duration(f['p50'])}, p99 {fmt.duration(f['p99'])}"
                for f in fit.get("fitted", [])]
        out += ["", "What could not be fitted:", ""]
        out += [f"- {u['path']}: {u['why']}" for u in fit.get("unfitted", [])] or ["- nothing"]
        out += ["- backlog peaks and drain times: not fitted; predicted from the fitted latencies and the model's queues"]
        if fit.get("rounds"):
            shown = ["n/a" if r["median"] is None else f"{r['median'] * 100:.1f}%" for r in fit["rounds"]]
            out += ["", "Median |relative error| by round (0: the model before the fit): "
                    + ", ".join(f"{r['round']}: {v}" for r, v in zip(fit["rounds"], shown))]
    return "\n".join(out) + "\n"


def build_calibration(sim_dir: str | Path, live_dir: str | Path, out_dir: str | Path, fit: dict | None = None,
                      role: str | None = None) -> Path:
    """Write out_dir/calibration.html (+ plots/, calibration.md) comparing a sim run with a
    live run. `fit`: what `surgesim calibrate` fitted and could not (Fit.record()); `role`:
    a sentence saying whether the sim was fitted on this live run or predicts it."""
    sim, live = RunData(load_run(sim_dir)), RunData(load_run(live_dir))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    factor = sim.scales["rate_scale"] / live.scales["rate_scale"]
    warnings = []
    if sim.summary.get("scenario") != live.summary.get("scenario"):
        warnings.append(f"Different scenarios ({sim.summary.get('scenario')} vs {live.summary.get('scenario')}): "
                        "a calibration compares one scenario in both engines.")
    if sim.summary.get("mode") != "sim" or live.summary.get("mode") != "live":
        warnings.append(f"Expected a sim run and a live run; got {sim.summary.get('mode')} and {live.summary.get('mode')}.")
    if sim.summary.get("plan") != live.summary.get("plan") and not fit and not role:
        warnings.append(f"Different plans ({sim.summary.get('plan')} vs {live.summary.get('plan')}).")
    if sim.scales["time_scale"] != live.scales["time_scale"]:
        warnings.append(f"The sim ran on the scenario's clock (×{sim.scales['time_scale']:g}) and live at "
                        f"×{live.scales['time_scale']:g}: latencies are wall seconds live and backlogs depend on "
                        "the live run's real-time service; `surgesim sim --as-live` simulates the live run as it ran.")
    table = rows(sim, live, factor)
    median, n = median_error(table)
    scored = [(score(r), r) for r in table if score(r) is not None]
    worst = max(scored, key=lambda sr: sr[0], default=(None, None))[1]
    if median is not None:
        misses = sum(1 for e, _ in scored if e == MISS)
        headline = (f"Median |relative error| {median * 100:.0f}% over {n} comparisons"
                    + (f" ({misses} one-sided misses counted as worse than any bound)" if misses else "")
                    + f"; worst: {worst['metric']} {worst['entity']} {worst['err_text']}")
        level = "pass" if median <= GOOD else "info" if median <= FAIR else "fail"
    else:
        headline, level = "No comparable numbers: the runs share no subscription or path.", "info"
    tl = plots.Timeline(sim.start_clock_s, max(sim.duration_s, live.duration_s), sim.events or live.events)
    plot_dir = out_dir / "plots"
    for stale in plot_dir.glob("calibration_*.png"):
        stale.unlink()
    figs = figures(sim, live, factor, tl, plot_dir)
    title = f"{sim.summary.get('scenario')}: sim vs live"
    (out_dir / "calibration.md").write_text(markdown(f"Calibration: {title}", headline, table, fit, role))
    return render(
        "calibration.html", out_dir / "calibration.html",
        title=title, sim=sim, live=live, factor=factor, rows=table,
        headline=headline, level=level, warnings=warnings, figures=figs, good=GOOD, fair=FAIR, fit=fit, role=role,
        clock=f"{fmt.clock(tl.start_clock_s)}–{fmt.clock(tl.start_clock_s + tl.duration_s)}",
    )


__all__ = ["MISS", "build_calibration", "markdown", "median_error", "relative_error", "score"]
