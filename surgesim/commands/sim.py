from __future__ import annotations

import datetime as dt
import platform
import sys
import time
from pathlib import Path

import click

from surgesim.schema import SchemaError, load_experiment


def default_run_dir(scenario: str, plan: str, seed: int) -> Path:
    from surgesim.rundir import new_run_id

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / new_run_id(f"{scenario}-{plan}-s{seed}", "sim", stamp)


def simulate(scenario: Path, plan: Path | None, seed: int | None, out: Path | None, exact: bool,
             quiet: bool = False, split: bool = True) -> tuple[dict, Path]:
    """Load, run and write one simulation; returns (summary, run directory)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from surgesim.sim.split import run_experiment
    from surgesim.sim.output import write_run
    from surgesim.sim.stepless import stepless_warnings, workflow_job_warnings

    exp = load_experiment(scenario, plan)
    seed = exp.scenario.seed if seed is None else seed
    out = out or default_run_dir(exp.scenario.name, exp.plan.name, seed)
    began = time.time()
    # The progress guard (sim/guard.py) also watches the wall clock here, in the CLI.
    guard = {"clock": time.monotonic}
    if quiet:
        eng = run_experiment(exp, seed=seed, exact=exact, split=split, guard=guard)
    else:
        with Progress(TextColumn("[bold]sim[/] {task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task(f"{exp.scenario.name} / {exp.plan.name}", total=None)
            eng = run_experiment(exp, seed=seed, exact=exact, split=split, guard=guard,
                                 progress=lambda k, n: bar.update(task, completed=k, total=n) if k % 50 == 0 or k == n else None)
    ended = time.time()
    meta = {"run_id": out.name, "wall_start": dt.datetime.fromtimestamp(began).isoformat(timespec="seconds"),
            "wall_seconds": round(ended - began, 3), "host": platform.node(), "python": platform.python_version(),
            "engine": "sim"}
    summary = write_run(eng, out, meta)
    for line in stepless_warnings(exp, summary["totals"]) + workflow_job_warnings(exp):
        click.echo(f"warning: {line}", err=True)
    return summary, out


def verdict_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from surgesim.checks import failed_lines, show_observed
    from surgesim.slo import failure_message

    table = Table(title=f"{summary['scenario']} / plan {summary['plan']} (seed {summary['seed']})")
    table.add_column("SLO")
    table.add_column("observed", justify="right")
    table.add_column("verdict")
    for r in summary["slos"]:
        if r.get("not_measured"):  # a load-only run (surgesim/live/target_run.py): fails, and says why
            table.add_row(r["text"], "not measured", "[red]FAILS[/]")
            continue
        obs = failure_message(r).split(",")[0].replace("observed ", "")
        table.add_row(r["text"], obs, "[green]holds[/]" if r["holds"] else "[red]FAILS[/]")
    checks = summary.get("checks") or []
    if checks:
        table.add_section()
    for c in checks:  # the implicit checks, after the scenario's own SLOs
        text = c["text"] + (" [dim](relaxed)[/]" if c.get("reason") else "")
        table.add_row(f"[dim]implicit[/] {text}", show_observed(c), "[green]holds[/]" if c["holds"] else "[red]FAILS[/]")
    Console().print(table)
    cons = summary["conservation"]
    if cons.get("ok") is None:
        click.echo(f"conservation: not measured ({cons.get('why', '')})")
    else:
        click.echo(f"conservation: {'ok' if cons['ok'] else 'BROKEN'} over {len(cons['subscriptions'])} subscriptions")
    for line in failed_lines(checks):
        click.echo(line)
    for r in summary["slos"]:
        if r.get("not_measured"):
            click.echo(f"FAILED (not measured) {r['text']}: {r['why']}")
    if summary.get("load_only"):
        click.echo("not measured in a load-only run (not in the verdict): "
                   + ", ".join(n["name"] for n in summary.get("not_measured", []) if not n["name"].startswith("slo: ")))
    click.echo(f"verdict: {summary['verdict'].upper()}")


@click.command()
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option("--plan", type=click.Path(path_type=Path), default=None, help="Plan file (overrides the scenario's).")
@click.option("--seed", type=int, default=None, help="Random seed (default: the scenario's).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory to write (default runs/<id>).")
@click.option("--exact", is_flag=True, help="Queue every arrival one by one on the slots heap (slower; the default gives the same starts, vectorised where nobody waits).")
@click.option("--split/--no-split", default=True, show_default=True,
              help="Run the fleet's telemetry in a second process when the system can be cut there (docs/simulator.md).")
@click.option("--report/--no-report", default=True, show_default=True, help="Build report.html and junit.xml at the end.")
@click.option("--as-live", is_flag=True,
              help="Simulate the scenario as `surgesim live` runs it (wall time, the live rate and time scales, "
                   "per message), written on the scenario's clock: what a calibrated plan predicts (surgesim/wallclock.py).")
def sim(scenario: Path, plan: Path | None, seed: int | None, out: Path | None, exact: bool, split: bool,
        report: bool, as_live: bool) -> None:
    """Run SCENARIO in the discrete-event simulator and write a run directory.

    Exits 0 when every SLO and implicit check holds, 1 when any fails, 2 on bad input
    (or a run the progress guard stopped)."""
    from surgesim.sim.guard import Stalled

    from surgesim.wallclock import NotAsLive, simulate_as_live

    try:
        if as_live:
            exp = load_experiment(scenario, plan)
            out = out or default_run_dir(exp.scenario.name, exp.plan.name, exp.scenario.seed if seed is None else seed)
            summary, run_dir = simulate_as_live(scenario, plan, out, seed=seed)
        else:
            summary, run_dir = simulate(scenario, plan, seed, out, exact, split=split)
    except NotAsLive as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except SchemaError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(2)
    except Stalled as exc:  # the input drives the model into a loop: bad input, not a failed SLO
        click.echo(f"{scenario}: {exc}", err=True)
        sys.exit(2)
    verdict_table(summary)
    if report:
        finish_report(run_dir)
    click.echo(f"run directory: {run_dir}")
    sys.exit(0 if summary["verdict"] == "pass" else 1)


def finish_report(run_dir: Path) -> None:
    """Every run ends with report.html and junit.xml; a report failure is reported, not fatal."""
    from surgesim.reports import build_report, write_junit

    try:
        write_junit(run_dir)
        click.echo(f"report: {build_report(run_dir)}")
    except Exception as exc:  # noqa: BLE001 -- the run directory is complete either way
        click.echo(f"report not built: {type(exc).__name__}: {exc} (retry with `surgesim report {run_dir}`)", err=True)
