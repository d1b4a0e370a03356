from __future__ import annotations

from pathlib import Path

import click
import yaml

from surgesim.schema import SchemaError, load_experiment


@click.command("calibrate")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("live_run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--plan", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The plan the live run used (default: the scenario's).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where to write the overlay plan (default: LIVE_RUN/calibrated-plan.yaml).")
@click.option("--seed", type=int, default=None)
def calibrate(scenario: Path, live_run: Path, plan: Path | None, out: Path | None, seed: int | None) -> None:
    """Fit the simulator to LIVE_RUN (a `surgesim live` run of SCENARIO): run the sim, fit
    per-route and per-consumer overheads from the latencies both measured, write them as a
    plan overlay, run the sim again with it, and print the median |relative error| before
    and after (the calibration report's comparisons), and what could not be fitted."""
    from surgesim.calibrate import fit_overlay, load, median_error
    from surgesim.commands.sim import simulate
    from surgesim.reports.calibration import build_calibration

    try:
        exp = load_experiment(scenario, plan)
    except SchemaError as e:
        raise click.ClickException(str(e)) from None
    live = load(live_run)
    out = out or live_run / "calibrated-plan.yaml"
    _, before_dir = simulate(scenario, plan, seed, live_run.parent / f"{live_run.name}-sim-before", False, quiet=True)
    before = load(before_dir)
    fit = fit_overlay(exp, before, live)
    out.write_text(yaml.safe_dump(fit.plan, sort_keys=False))
    _, after_dir = simulate(scenario, out, seed, live_run.parent / f"{live_run.name}-sim-after", False, quiet=True)
    after = load(after_dir)
    b, n = median_error(before, live)
    a, m = median_error(after, live)
    for f in fit.fitted:
        shown = f"p50 {f['p50'] * 1000:.1f} ms" + (f", p99 {f['p99'] * 1000:.1f} ms" if "p99" in f else "")
        click.echo(f"fitted  {f['what']:<8} {f['path']}: sleep {shown}")
    for u in fit.unfitted:
        click.echo(f"not fitted  {u['path']}: {u['why']}")
    show = lambda v: "n/a" if v is None else f"{v * 100:.1f}%"  # noqa: E731
    click.echo(f"median |relative error| before: {show(b)} over {n} comparisons; after: {show(a)} over {m}")
    report = build_calibration(after_dir, live_run, live_run.parent / f"{live_run.name}-calibration")
    click.echo(f"overlay plan: {out}")
    click.echo(f"calibration report: {report}")
