from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from surgesim.schema import SchemaError


def _row(summary: dict, run_dir: Path) -> dict:
    """One plan's line. Peak backlog and drain describe the same subscription (the one with the
    largest peak), the drain by the definition of the drain() SLO (surgesim.slo.drain_time)."""
    from surgesim.reports.metrics import RunData
    from surgesim.rundir import load_run

    subs = summary["totals"]["subscriptions"]
    services = summary["totals"]["services"]
    lat = summary.get("latency", {})
    cost = summary.get("cost") or {}
    per_day = (cost.get("per_day") or {}).get("total")
    peak_sub = max(subs, key=lambda n: subs[n]["peak_backlog"], default=None)
    peak = subs[peak_sub]["peak_backlog"] if peak_sub is not None else 0
    drain = RunData(load_run(run_dir)).drains.get(peak_sub, 0.0) if peak else 0.0
    return {
        "plan": summary["plan"],
        "verdict": summary["verdict"],
        "p99": {path: v["p99"] for path, v in sorted(lat.items())},
        "peak_backlog": peak,
        "peak_subscription": peak_sub if peak else None,
        "drain_s": drain,
        "drained": drain is not None,
        "dlq": sum(s["dead_lettered"] for s in subs.values()),
        "peak_instances": sum(s["peak_instances"] for s in services.values()),
        "cost_per_day": per_day,
        "checks_failed": sorted(c["name"] for c in summary.get("checks") or [] if not c["holds"]),
    }


def _drain(r: dict) -> str:
    from surgesim.reports import fmt

    return "never drained" if r["drain_s"] is None else fmt.duration(r["drain_s"])


@click.command()
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option("--plan", "plans", type=click.Path(path_type=Path), multiple=True, required=True, help="A plan (repeat).")
@click.option("--seed", type=int, default=None)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Directory for the runs and compare.json.")
def compare(scenario: Path, plans: tuple[Path, ...], seed: int | None, out: Path | None) -> None:
    """Run SCENARIO under each --plan and show them side by side; the cheapest plan that
    meets every SLO and implicit check is marked."""
    from rich.console import Console
    from rich.table import Table

    from surgesim.commands.sim import default_run_dir, simulate

    out = out or default_run_dir(scenario.stem, "compare", seed or 0)
    rows, dirs = [], []
    for i, plan in enumerate(plans):
        sub = plan.stem if [p.stem for p in plans].count(plan.stem) == 1 else f"{plan.stem}-{i + 1}"
        try:
            summary, run_dir = simulate(scenario, plan, seed, out / sub, exact=False)
        except SchemaError as exc:
            for line in exc.problems:
                click.echo(line, err=True)
            sys.exit(2)
        rows.append(_row(summary, run_dir))
        dirs.append(str(run_dir))
    passing = [r for r in rows if r["verdict"] == "pass" and r["cost_per_day"] is not None]
    best = min(passing, key=lambda r: r["cost_per_day"])["plan"] if passing else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"scenario": str(scenario), "runs": dirs, "rows": rows,
                                                  "best": best}, indent=2, sort_keys=True) + "\n")
    try:
        from surgesim.reports import build_comparison  # the HTML comparison, when present
    except ImportError:
        build_comparison = None
    if build_comparison is not None and len(dirs) >= 2:
        build_comparison([Path(d) for d in dirs], out)
    paths = sorted({p for r in rows for p in r["p99"]})
    table = Table(title=f"{scenario.name}: {len(rows)} plans")
    table.add_column("")
    for r in rows:
        table.add_column(("★ " if r["plan"] == best else "") + r["plan"], justify="right")
    for p in paths:
        table.add_row(f"p99 {p}", *[f"{r['p99'].get(p, float('nan')) * 1000:.1f} ms" for r in rows])
    table.add_row("peak backlog", *[f"{r['peak_backlog']:,}" + (f" ({r['peak_subscription']})" if r["peak_subscription"]
                                                                else "") for r in rows])
    table.add_row("drain of that backlog", *[_drain(r) for r in rows])
    table.add_row("dead-lettered", *[f"{r['dlq']:,}" for r in rows])
    table.add_row("peak instances", *[str(r["peak_instances"]) for r in rows])
    table.add_row("cost / day", *["-" if r["cost_per_day"] is None else f"${r['cost_per_day']:,.2f}" for r in rows])
    table.add_row("implicit checks failed", *[str(len(r["checks_failed"])) for r in rows])
    table.add_row("verdict", *[r["verdict"] for r in rows])
    Console().print(table)
    click.echo(f"cheapest plan meeting every SLO and implicit check: {best or 'none'}")
    click.echo(f"runs and compare.json: {out}")
    if (out / "comparison.html").exists():
        click.echo(f"comparison: {(out / 'comparison.html').resolve().as_uri()}")
