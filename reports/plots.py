"""Matplotlib figures for reports: time plots on the scenario clock, with every fault and
wave shaded and labelled. Uses the Agg canvas directly (no pyplot state), so reports can
be built from any thread and never need a display."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from surgesim.reports import fmt
from surgesim.reports.metrics import event_label, is_wave

# matplotlib and its fonts and image libraries are ~96 MB, over a third of the base install:
# they are the `plots` extra (part of `live`), and a report built without them says so where
# its figures would be (README, Install sizes).
try:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    from matplotlib.transforms import blended_transform_factory

    MISSING = ""
except ImportError:
    MISSING = "No plots: matplotlib is not installed. pip install 'surgesim[plots]' and run `surgesim report` again."

WAVE_COLOUR = "#1f77b4"
FAULT_COLOUR = "#d62728"
PCT_COLOURS = {"p50": "#2ca02c", "p95": "#ff7f0e", "p99": "#d62728"}
MAX_LINES = 8
WIDTH_IN = 12.0
DPI = 100
MAX_POINTS = 1500


@dataclass
class Plot:
    """One figure in a report: a PNG next to the HTML, or a note saying why there is none."""

    title: str
    file: str | None = None
    caption: str = ""
    note: str = ""


@dataclass
class Timeline:
    """What every time plot of one report shares: the clock, the span, the shaded events."""

    start_clock_s: float
    duration_s: float
    events: list[dict] = field(default_factory=list)
    view: tuple[float, float] | None = None
    """(start, end) in scenario seconds when a plot zooms in on part of the run."""

    def x(self, t: np.ndarray | pd.Index) -> np.ndarray:
        return self.start_clock_s + np.asarray(t, dtype=float)

    @property
    def span(self) -> tuple[float, float]:
        lo, hi = self.view or (0.0, self.duration_s)
        return self.start_clock_s + lo, self.start_clock_s + hi

    def clip(self, frame: pd.DataFrame, window_s: float) -> pd.DataFrame:
        if self.view is None or frame.empty:
            return frame
        t = frame.index.to_numpy(dtype=float)
        return frame[(t + window_s >= self.view[0]) & (t <= self.view[1])]

    def zoom(self, pad_s: float) -> "Timeline | None":
        """A view around the faults and waves, if they are a small part of a long run."""
        if not self.events:
            return None
        first = min(float(e["start_s"]) for e in self.events)
        last = max(float(e["start_s"] if e.get("end_s") is None else e["end_s"]) for e in self.events)
        lo, hi = max(0.0, first - pad_s), min(self.duration_s, last + pad_s)
        if hi - lo > 0.4 * self.duration_s:
            return None
        return Timeline(self.start_clock_s, self.duration_s, self.events, (lo, hi))


# matplotlib's tab10 then Dark2, written out so that colouring needs no matplotlib
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
DARK2 = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def _palette(names: list[str]) -> dict[str, str]:
    colours = TAB10 + DARK2
    return {n: colours[i % len(colours)] for i, n in enumerate(sorted(names))}


def _tick_step(span_s: float, max_ticks: int = 12) -> float:
    for step in (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if span_s / step <= max_ticks:
            return float(step)
    return 86400.0 * math.ceil(span_s / 86400.0 / max_ticks)


def _human(v: float, _pos=None) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:,.0f}" if a >= 10 or v == round(v) else f"{v:.2g}"


_DURATION_TICKS = [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600,
                   1200, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400]
_NUMBER_TICKS = [m * 10.0**e for e in range(-3, 9) for m in (1, 2, 5)]


def _duration_label(v: float, _pos=None) -> str:
    if v < 1e-3:
        return f"{v * 1e6:g}µs"
    if v < 1:
        return f"{v * 1000:g}ms"
    if v < 60:
        return f"{v:g}s"
    if v < 3600:
        return f"{v / 60:g}m"
    if v < 86400:
        return f"{v / 3600:g}h"
    return f"{v / 86400:g}d"


def log_ticks(ax, values: np.ndarray, durations: bool) -> None:
    """Log y axis with at most ~6 round ticks (1-2-5 numbers, or round durations for
    seconds) inside the data's range: matplotlib's own spread too many over many decades."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):  # nothing to put on a log axis (a backlog that never rose): stay linear
        return
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(NullLocator())
    lo, hi = v.min() / 1.3, v.max() * 1.3
    ax.set_ylim(lo, hi)
    ticks = [t for t in (_DURATION_TICKS if durations else _NUMBER_TICKS) if lo <= t <= hi]
    while len(ticks) > 7:
        ticks = ticks[::2]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(_duration_label if durations else _human))


def time_axis(ax, tl: Timeline, labels: bool = True, small: bool = False) -> None:
    """Clock-time ticks and the shaded events. Small panels get fewer ticks and numbered
    events (the key is in the figure's caption), since full labels would not fit."""
    lo, hi = tl.span
    ax.set_xlim(lo, hi)
    step = _tick_step(hi - lo, 5 if small else 12)
    ticks = np.arange(math.ceil(lo / step) * step, hi + 1e-9, step)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt.clock(v, with_day=tl.duration_s >= 86400)))
    ax.grid(True, alpha=0.25, linewidth=0.6)
    shade(ax, tl, labels, numbered=small)


def event_key(tl: Timeline) -> str:
    """'1 wave dispatch_wave 07:30–07:39 · 2 ...': the legend of numbered event markers."""
    parts = []
    for i, e in enumerate(sorted(tl.events, key=lambda e: e["start_s"]), start=1):
        start = tl.start_clock_s + float(e["start_s"])
        end = e.get("end_s")
        when = fmt.clock(start) + (f"–{fmt.clock(tl.start_clock_s + float(end))}" if end is not None and end > e["start_s"]
                                   else "" if end is not None else "–end")
        parts.append(f"({i}) {event_label(e)} {when}")
    return " · ".join(parts)


def shade(ax, tl: Timeline, labels: bool = True, numbered: bool = False) -> None:
    """Faults in red, waves in blue, each labelled at its start (staggered so labels of
    close events do not overlap)."""
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    span = max(tl.span[1] - tl.span[0], 1.0)
    last_x: dict[int, float] = {}
    for number, e in enumerate(sorted(tl.events, key=lambda e: e["start_s"]), start=1):
        colour = WAVE_COLOUR if is_wave(e) else FAULT_COLOUR
        start = tl.start_clock_s + float(e["start_s"])
        end = tl.start_clock_s + float(tl.duration_s if e.get("end_s") is None else e["end_s"])
        if end - start < span * 0.002:
            ax.axvline(start, color=colour, linestyle="--", linewidth=1.0, alpha=0.7)
        else:
            ax.axvspan(start, end, color=colour, alpha=0.10 if is_wave(e) else 0.13, linewidth=0)
        if numbered:
            level = 0
            while level in last_x and start - last_x[level] < span * 0.04 and level < 4:
                level += 1
            last_x[level] = start
            ax.text(start, 0.98 - level * 0.09, f"{number}", transform=trans, fontsize=7.5, color=colour, va="top",
                    ha="left", fontweight="bold", clip_on=True)
        elif labels:
            level = 0
            while level in last_x and start - last_x[level] < span * 0.16 and level < 4:
                level += 1
            last_x[level] = start
            ax.text(start, 0.97 - level * 0.11, " " + event_label(e), transform=trans, fontsize=7.5,
                    color=colour, va="top", ha="left", clip_on=True,
                    bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 0.5})


def binned(frame: pd.DataFrame, window_s: float, gauge: bool) -> tuple[pd.DataFrame, float]:
    """Fewer points for long runs: gauges keep each bin's maximum (so peaks survive),
    rates their mean. Returns the frame and its bin width."""
    if len(frame) <= MAX_POINTS:
        return frame, window_s
    bin_s = math.ceil(len(frame) / MAX_POINTS) * window_s
    keys = np.floor(frame.index.to_numpy(dtype=float) / bin_s) * bin_s
    grouped = frame.groupby(keys)
    return (grouped.max() if gauge else grouped.mean()), bin_s


def _lines(ax, frame: pd.DataFrame, tl: Timeline, window_s: float, *, gauge: bool, rank: pd.Series,
           colours: dict[str, str], steps: bool = False, max_lines: int = MAX_LINES) -> list[str]:
    """Plot the `max_lines` entities ranked highest in colour, the rest thin and grey.
    Returns the names drawn in colour."""
    frame, width = binned(frame, window_s, gauge)
    x = tl.x(frame.index) + (width if gauge else width / 2)
    top = [n for n in rank.sort_values(ascending=False).index if n in frame.columns][:max_lines]
    rest = [c for c in frame.columns if c not in top]
    drawstyle = "steps-pre" if steps else "default"
    for i, name in enumerate(rest):
        ax.plot(x, frame[name].to_numpy(), color="#999999", linewidth=0.6, alpha=0.6, drawstyle=drawstyle,
                label=f"{len(rest)} others" if i == 0 else None)
    used: set = set()
    spare = [c for c in _palette([str(i) for i in range(18)]).values()]
    for name in top:
        # keep an entity's colour across figures, unless two drawn lines would share it
        colour = colours.get(name)
        if colour is None or colour in used:
            colour = next((c for c in spare if c not in used and c not in {colours.get(n) for n in top}), colour)
        used.add(colour)
        ax.plot(x, frame[name].to_numpy(), color=colour, linewidth=1.4, drawstyle=drawstyle, label=name)
    return top


def _legend(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        # the grey "others" entry is drawn first but belongs last in the legend
        order = sorted(range(len(labels)), key=lambda i: labels[i].endswith(" others"))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left",
                  bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)


def _figure(rows: int, height: float = 2.9, cols: int = 1, *, legend_in: float = 2.0, top_in: float = 0.35,
            gap_in: float = 0.25) -> tuple[Figure, np.ndarray]:
    """Fixed margins in inches (room on the right for legends). Matplotlib's constrained
    layout measures every tick label and costs more than the drawing for a day-long run."""
    total = height * rows + top_in + 0.55
    fig = Figure(figsize=(WIDTH_IN, total), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    fig.subplots_adjust(left=0.75 / WIDTH_IN, right=1 - legend_in / WIDTH_IN, bottom=0.55 / total,
                        top=1 - top_in / total, hspace=gap_in / height, wspace=0.18)
    return fig, axes


def _save(fig: Figure, out_dir: Path, name: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / name, dpi=DPI)
    return f"{out_dir.name}/{name}"


def _nonempty(frame: pd.DataFrame) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame()
    return frame.loc[:, (frame.fillna(0) != 0).any(axis=0)]


def rates(data, tl: Timeline, out_dir: Path, colours: dict[str, str]) -> Plot:
    title = "Request and event rates"
    published = _nonempty(data.rate("published"))
    requests = _nonempty(data.rate("requests"))
    failures = _nonempty(pd.concat([data.rate("rejected").add_suffix(" 429"), data.rate("errors").add_suffix(" errors")],
                                   axis=1)) if not (data.frame("rejected").empty and data.frame("errors").empty) else pd.DataFrame()
    panels = [(f, label) for f, label in ((published, "published per topic (msg/s)"),
                                         (requests, "requests per service (req/s)"),
                                         (failures, "rejected (429) and errors (/s)")) if not f.empty]
    if not panels:
        return Plot(title, note="No rates: the run recorded no publishes or requests.")
    fig, axes = _figure(len(panels))
    for (frame, label), ax in zip(panels, axes[:, 0]):
        palette = colours if not label.startswith("rejected") else _palette(list(frame.columns))
        _lines(ax, frame, tl, data.window_s, gauge=False, rank=frame.sum(), colours=palette)
        peaks = frame.max()
        peaks = peaks[peaks > 0]
        if not label.startswith("rejected") and len(peaks) > 1 and peaks.max() / peaks.min() > 30:
            # one busy topic would flatten every other line to zero on a linear axis
            log_ticks(ax, frame.to_numpy().ravel(), durations=False)
            label += ", log scale"
        else:
            ax.yaxis.set_major_formatter(FuncFormatter(_human))
            ax.set_ylim(bottom=0)
        ax.set_ylabel(label, fontsize=9)
        time_axis(ax, tl)
        _legend(ax)
    axes[-1, 0].set_xlabel("scenario clock time")
    return Plot(title, _save(fig, out_dir, "rates.png"),
                "Per second, averaged over each window. Shaded: faults (red) and waves (blue).")


def backlog(data, tl: Timeline, out_dir: Path, colours: dict[str, str], file: str = "backlog.png",
            title: str = "Backlog and oldest unacked message age per subscription") -> Plot:
    levels = tl.clip(data.frame("backlog"), data.window_s)
    ages = tl.clip(data.frame("oldest_unacked"), data.window_s)
    if levels.empty or not (levels.fillna(0) != 0).any().any():
        note = ("No backlog recorded." if levels.empty else
                f"Every subscription's backlog stayed at 0 ({len(levels.columns)} subscriptions).")
        return Plot(title, note=note)
    fig, axes = _figure(2 if not ages.empty else 1)
    ax = axes[0, 0]
    top = _lines(ax, levels, tl, data.window_s, gauge=True, rank=levels.max(), colours=colours)
    ax.set_ylabel("undelivered messages", fontsize=9)
    ax.yaxis.set_major_formatter(FuncFormatter(_human))
    ax.set_ylim(bottom=0, top=levels.max().max() * 1.25)
    name = top[0]
    peak_t = float(levels[name].idxmax())
    peak = float(levels[name].max())
    px = tl.start_clock_s + peak_t + data.window_s
    ax.plot([px], [peak], marker="o", color=colours.get(name), markersize=5)
    # said above the axes, where it cannot collide with the event labels
    ax.set_title(f"peak {fmt.count(peak)} on {name} at {fmt.clock(px)}", fontsize=8.5, loc="right")
    time_axis(ax, tl)
    _legend(ax)
    if not ages.empty:
        ax2 = axes[1, 0]
        _lines(ax2, ages / 60.0, tl, data.window_s, gauge=True, rank=ages.max(), colours=colours)
        ax2.set_ylabel("oldest unacked (min)", fontsize=9)
        ax2.set_ylim(bottom=0)
        time_axis(ax2, tl)
        _legend(ax2)
    axes[-1, 0].set_xlabel("scenario clock time")
    quiet = [c for c in levels.columns if levels[c].max() == 0]
    caption = "Level at the end of each window; the largest eight in colour."
    if quiet:
        caption += f" {len(quiet)} subscription(s) never had a backlog: {', '.join(sorted(quiet))}."
    return Plot(title, _save(fig, out_dir, file), caption)


def dead_letters(data, tl: Timeline, out_dir: Path, colours: dict[str, str]) -> Plot:
    title = "Dead-lettered messages (cumulative, per subscription)"
    dead = data.frame("dead_lettered")
    if dead.empty:
        return Plot(title, note="No dead-letter counts were recorded.")
    dead = _nonempty(dead)
    if dead.empty:
        return Plot(title, note="No message was dead-lettered in this run.")
    cumulative = dead.fillna(0).cumsum()
    fig, axes = _figure(1)
    ax = axes[0, 0]
    _lines(ax, cumulative, tl, data.window_s, gauge=True, rank=cumulative.iloc[-1], colours=colours, steps=True)
    ax.set_ylabel("messages in the DLQ", fontsize=9)
    ax.yaxis.set_major_formatter(FuncFormatter(_human))
    ax.set_ylim(bottom=0, top=cumulative.max().max() * 1.25)
    time_axis(ax, tl)
    _legend(ax)
    ax.set_xlabel("scenario clock time")
    return Plot(title, _save(fig, out_dir, "dead_letters.png"),
                "Messages moved to each subscription's dead-letter topic so far (the DLQ depth if nobody drains it).")


def instances(data, tl: Timeline, out_dir: Path, colours: dict[str, str]) -> Plot:
    title = "Instances per service"
    frame = data.frame("instances")
    if frame.empty:
        return Plot(title, note="No instance counts were recorded.")
    fig, axes = _figure(1, height=3.4)
    ax = axes[0, 0]
    _lines(ax, frame, tl, data.window_s, gauge=True, rank=frame.max(), colours=colours, steps=True, max_lines=12)
    ax.set_ylabel("instances", fontsize=9)
    ax.set_ylim(bottom=0, top=max(1.0, frame.max().max()) * 1.2)
    time_axis(ax, tl)
    _legend(ax)
    ax.set_xlabel("scenario clock time")
    return Plot(title, _save(fig, out_dir, "instances.png"), "Instance count at the end of each window.")


def percentiles(data, tl: Timeline, out_dir: Path, kind: str, thresholds: dict[str, list[tuple[str, float]]],
                max_panels: int = 12) -> Plot:
    """Small multiples: p50/p95/p99 over time per path, log scale, with SLO thresholds."""
    title = {"latency": "Request latency per path (p50, p95, p99)",
             "lag": "End-to-end lag per subscription (publish to handler done)"}[kind]
    pct = data.percentiles
    pct = pct[pct["path"].str.startswith(kind + "/")]
    if pct.empty:
        return Plot(title, note=f"No {kind} samples were recorded.")
    worst = pct.groupby("path")["p99"].max().sort_values(ascending=False)
    shown = sorted(worst.index[:max_panels])
    cols = 2 if len(shown) <= 4 else 3
    rows = math.ceil(len(shown) / cols)
    fig, axes = _figure(rows, 2.5, cols, legend_in=0.2, top_in=0.5, gap_in=0.6)
    for i, path in enumerate(shown):
        ax = axes[i // cols, i % cols]
        rows_ = pct[pct["path"] == path].sort_values("time_s")
        x = tl.x(rows_["time_s"]) + data.bin_s / 2
        scale = 1000.0 if kind == "latency" else 1.0
        for q in ("p50", "p95", "p99"):
            ax.plot(x, rows_[q].to_numpy() * scale, color=PCT_COLOURS[q], linewidth=1.1, label=q)
        name = path.split("/", 1)[1]
        for text, value in thresholds.get(name, []):
            ax.axhline(value * scale, color="black", linestyle="--", linewidth=0.9)
            ax.text(0.99, value * scale, f"SLO {text}", transform=blended_transform_factory(ax.transAxes, ax.transData),
                    fontsize=7, ha="right", va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 0.5})
        values = np.concatenate([rows_[q].to_numpy() * scale for q in ("p50", "p95", "p99")]
                                + [np.array([v * scale for _t, v in thresholds.get(name, [])])])
        log_ticks(ax, values, durations=kind != "latency")
        ax.set_title(name, fontsize=9, loc="left")
        time_axis(ax, tl, small=True)
        if i % cols == 0:
            ax.set_ylabel("ms" if kind == "latency" else "lag", fontsize=9)
        ax.tick_params(labelsize=8)
    for j in range(len(shown), rows * cols):
        axes[j // cols, j % cols].set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncols=3, fontsize=8, frameon=False)
    caption = f"Percentiles of every sample in each {fmt.duration(data.bin_s)} bin (merged histograms), log scale."
    if tl.events:
        caption += " Numbered bands: " + event_key(tl) + "."
    hidden = len(worst) - len(shown)
    if hidden:
        caption += f" {hidden} more paths with lower p99 are in the table below."
    return Plot(title, _save(fig, out_dir, f"{kind}.png"), caption)


ATTEMPT_COLOURS = {"succeeded": "#2ca02c", "crashed": "#d62728", "timed out": "#ff7f0e", "cancelled": "#7f7f7f"}


def attempt_outcome(attempt: dict) -> str:
    """How one task attempt of a job ended, for the Gantt's colours."""
    if attempt.get("timed_out"):
        return "timed out"
    code = attempt.get("exit_code")
    if code == 0:
        return "succeeded"
    return "cancelled" if code is None or attempt.get("cancelled") else "crashed"


def job_tasks(executions: list[dict], out_dir: Path) -> Plot:
    """Gantt chart of job tasks: one row per task of each execution, one bar per attempt
    (start to end, wall seconds from the first execution's start) coloured by outcome, its
    attempt number written on the bar."""
    title = "Job tasks over time (one row per task, one bar per attempt)"
    rows = [(ex, t) for ex in executions for t in ex.get("tasks") or []]
    attempts = [a for _, t in rows for a in t.get("attempts") or [] if a.get("start") is not None]
    if not attempts:
        return Plot(title, note="No task attempt was recorded.")
    if MISSING:
        return Plot(title, note=MISSING)
    t0 = min(float(a["start"]) for a in attempts)
    height = min(0.22 * len(rows) + 0.8, 12.0)
    fig = Figure(figsize=(WIDTH_IN, height + 0.9), dpi=DPI)
    ax = fig.add_axes((0.75 / WIDTH_IN + 0.08, 0.55 / (height + 0.9), 1 - 2.0 / WIDTH_IN - 0.08,
                       height / (height + 0.9)))
    seen: set[str] = set()
    labels = []
    for y, (ex, task) in enumerate(rows):
        labels.append(f"{ex.get('execution', '?')} #{task.get('index')}")
        for a in task.get("attempts") or []:
            if a.get("start") is None:
                continue
            end = a.get("end") if a.get("end") is not None else a["start"]
            outcome = attempt_outcome(a)
            ax.barh(y, max(float(end) - float(a["start"]), 0.05), left=float(a["start"]) - t0, height=0.7,
                    color=ATTEMPT_COLOURS[outcome], edgecolor="white", linewidth=0.5,
                    label=None if outcome in seen else outcome)
            seen.add(outcome)
            if len(rows) <= 40:
                ax.text(float(a["start"]) - t0 + 0.02, y, str(a.get("attempt", "")), va="center", fontsize=6,
                        color="white")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels if len(rows) <= 40 else [""] * len(rows), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("wall seconds since the first task started")
    ax.set_ylabel("execution #task", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    n_retried = sum(1 for _, t in rows if len(t.get("attempts") or []) > 1)
    caption = (f"{len(rows)} tasks in {len(executions)} execution(s), {len(attempts)} attempts; "
               f"{n_retried} task(s) retried. Colours: how each attempt ended (exit 0, non-zero exit, "
               "killed at task_timeout, cancelled); the number on a bar is CLOUD_RUN_TASK_ATTEMPT.")
    return Plot(title, _save(fig, out_dir, "job_tasks.png"), caption)
