"""Overlaid time plots for several runs of one scenario (plan comparison, calibration):
one small panel per subscription or path, one line per run, on the scenario clock."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surgesim.reports import fmt, plots


@dataclass
class Line:
    label: str
    x: np.ndarray  # scenario seconds (0 = scenario start)
    y: np.ndarray
    colour: str
    style: str = "-"


@dataclass
class Panel:
    title: str
    lines: list[Line]
    threshold: tuple[str, float] | None = None


def overlay(title: str, panels: list[Panel], tl: plots.Timeline, out_dir: Path, name: str, *, ylabel: str,
            log: bool = False, auto_log: bool = False, durations: bool = False, caption: str = "",
            empty: str = "") -> plots.Plot:
    panels = [p for p in panels if any(len(line.x) for line in p.lines)]
    if not panels:
        return plots.Plot(title, note=empty or f"No data for {title.lower()}.")
    if plots.MISSING:
        return plots.Plot(title, note=plots.MISSING)
    cols = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / cols)
    small = cols > 1
    fig, axes = plots._figure(rows, 2.7 if small else 3.2, cols, legend_in=0.2 if small else 2.0, top_in=0.5,
                              gap_in=0.6)
    for i, panel in enumerate(panels):
        ax = axes[i // cols, i % cols]
        values = []
        for line in panel.lines:
            if len(line.x):
                ax.plot(tl.x(line.x), line.y, line.style, color=line.colour, linewidth=1.3, label=line.label)
                values.append(np.asarray(line.y, dtype=float))
        if panel.threshold:
            text, value = panel.threshold
            ax.axhline(value, color="black", linestyle="--", linewidth=0.9)
            ax.text(0.99, value, f"SLO {text}", transform=plots.blended_transform_factory(ax.transAxes, ax.transData),
                    fontsize=7, ha="right", va="bottom")
            values.append(np.array([value]))
        peaks = [float(np.nanmax(v)) for v in values if len(v) and np.nanmax(v) > 0]
        # one run far above the others would flatten them to a line on zero
        panel_log = log or (auto_log and len(peaks) > 1 and max(peaks) / min(peaks) > 20)
        if panel_log:
            plots.log_ticks(ax, np.concatenate(values) if values else np.array([]), durations=durations)
            if not log:
                ax.set_title(panel.title + " (log scale)", fontsize=9, loc="left")
        else:
            ax.set_ylim(bottom=0, top=max(peaks, default=1.0) * 1.2)
            ax.yaxis.set_major_formatter(plots.FuncFormatter(plots._human))
        if not (panel_log and not log):
            ax.set_title(panel.title, fontsize=9, loc="left")
        plots.time_axis(ax, tl, small=small)
        if i % cols == 0:
            ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
        if not small:
            plots._legend(ax)
    for j in range(len(panels), rows * cols):
        axes[j // cols, j % cols].set_visible(False)
    if small:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper right", ncols=min(4, len(labels)), fontsize=8, frameon=False)
    if tl.events and small:
        caption = (caption + " Numbered bands: " + plots.event_key(tl) + ".").strip()
    return plots.Plot(title, plots._save(fig, out_dir, name), caption)


def run_colours(n: int) -> list[str]:
    return [plots.TAB10[i % 10] for i in range(n)]


def clock_span(tl: plots.Timeline) -> str:
    return f"{fmt.clock(tl.start_clock_s)}–{fmt.clock(tl.start_clock_s + tl.duration_s)}"
