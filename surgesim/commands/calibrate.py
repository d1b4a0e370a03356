from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from surgesim.schema import SchemaError, load_experiment


def _show(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


@click.command("calibrate")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("live_runs", metavar="LIVE_RUN...", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--plan", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The plan the live run used (default: the scenario's).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where to write the overlay plan (default: LIVE_RUN/calibrated-plan.yaml).")
@click.option("--seed", type=int, default=None)
@click.option("--rounds", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Rounds of fit-and-simulate (the best is kept).")
@click.option("--predict", nargs=2, multiple=True, type=click.Path(exists=True, path_type=Path),
              metavar="SCENARIO2 LIVE_RUN2",
              help="Then predict another live run (of a scenario not used for the fit) with the same overlay; repeatable.")
def calibrate(scenario: Path, live_runs: tuple[Path, ...], plan: Path | None, out: Path | None, seed: int | None, rounds: int,
              predict: tuple[tuple[Path, Path], ...]) -> None:
    """Fit the simulator to LIVE_RUN (a `surgesim live` run of SCENARIO; several runs of it
    are pooled): simulate the
    scenario as the live run ran it (wall time, live volume: `surgesim sim --as-live`),
    fit each route's and each consumer's overhead from the latencies both measured, write
    them as a plan overlay, and print the median |relative error| over the calibration
    report's comparisons before and after, and what could not be fitted. With --predict,
    the overlay then predicts other live runs it was not fitted on."""
    from surgesim.calibrate import calibrate as fit_to, load, median_error
    from surgesim.reports.calibration import build_calibration
    from surgesim.wallclock import NotAsLive, simulate_as_live

    try:
        exp = load_experiment(scenario, plan)
    except SchemaError as e:
        raise click.ClickException(str(e)) from None
    live_run = live_runs[0]
    lives = [load(r) for r in live_runs]
    out = out or live_run / "calibrated-plan.yaml"
    work = live_run.parent / f"{live_run.name}-calibration"
    work.mkdir(parents=True, exist_ok=True)

    def simulate(plan_dict: dict | None, k: int):
        plan_file = plan
        if plan_dict is not None:
            plan_file = work / f"round-{k}-plan.yaml"
            plan_file.write_text(yaml.safe_dump(plan_dict, sort_keys=False))
        _, d = simulate_as_live(scenario, plan_file, work / f"sim-round-{k}", seed=seed, live_run=live_run)
        return load(d)

    try:
        fit, before, after = fit_to(exp, lives, simulate, rounds)
    except NotAsLive as e:
        raise click.ClickException(str(e)) from None
    out.write_text(yaml.safe_dump(fit.plan, sort_keys=False))
    (work / "fit.json").write_text(json.dumps(fit.record(), indent=2))
    for f in fit.fitted:
        kind = "sleep" if f["what"] in ("route", "consumer") else "delay"  # a plan figure, not a step
        click.echo(f"fitted  {f['path']} ({f['target']}): {kind} p50 {f['p50'] * 1000:.1f} ms, p99 {f['p99'] * 1000:.1f} ms")
    for u in fit.unfitted:
        click.echo(f"not fitted  {u['path']}: {u['why']}")
    for r, lv in zip(live_runs, lives):
        b, n = median_error(before, lv)
        a, m = median_error(after, lv)
        click.echo(f"{r}: median |relative error| before: {_show(b)} over {n} comparisons; after: {_show(a)} over {m}")
    fitted_on = ", ".join(r.name for r in live_runs)
    report = build_calibration(after.run.dir, live_run, work, fit=fit.record(),
                               role=f"Fitted on this live run ({fitted_on}); the plan overlay: {out}." if len(live_runs) == 1
                               else f"Fitted on the live runs {fitted_on} pooled; compared here with {live_run.name}; "
                                    f"the plan overlay: {out}.")
    click.echo(f"overlay plan: {out}")
    click.echo(f"calibration report: {report}")
    for sc2, live2 in predict:
        pred = live2.parent / f"{live2.name}-prediction"
        try:
            _, d = simulate_as_live(sc2, out, pred / "sim", seed=seed, live_run=live2)
        except NotAsLive as e:
            raise click.ClickException(str(e)) from None
        p, k = median_error(load(d), load(live2))
        click.echo(f"predicted {live2} ({sc2.name}, not fitted on) with {out.name}: median |relative error| "
                   f"{_show(p)} over {k} comparisons")
        rep = build_calibration(d, live2, pred, fit=fit.record(),
                                role=f"Predicted with the overlay {out.name} fitted on {fitted_on} "
                                     f"({scenario.name}); this live run ({live2.name}, {sc2.name}) was not used for the fit.")
        click.echo(f"prediction report: {rep}")
