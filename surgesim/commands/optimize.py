from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click
import yaml

from surgesim.schema import SchemaError, load_experiment


@click.command("optimize")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--space", "space_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The knobs' values to try (surgesim/optimize.py describes the file).")
@click.option("--plan", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The plan the candidates start from (default: the scenario's).")
@click.option("--workers", type=int, default=None, help="Processes (default: every core).")
@click.option("--dask", "dask_address", default=None, metavar="tcp://HOST:PORT",
              help="Run the candidates on this Dask scheduler's workers instead of local processes "
                   "(needs the `dask` extra).")
@click.option("--seed", type=int, default=None)
@click.option("--out", type=click.Path(path_type=Path), default=None)
def optimize(scenario: Path, space_file: Path, plan: Path | None, workers: int | None, dask_address: str | None,
             seed: int | None, out: Path | None) -> None:
    """Find the cheapest plan in SPACE that meets every SLO and implicit check of SCENARIO.
    Exit 1 when none does."""
    from surgesim.optimize import p99_of, search

    try:
        exp = load_experiment(scenario, plan)
        space = yaml.safe_load(space_file.read_text()) or {}
    except SchemaError as e:
        raise click.ClickException(str(e)) from None
    out = out or Path("runs") / f"optimize-{exp.scenario.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    show = lambda v: "—" if v is None else (f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s")  # noqa: E731

    def progress(done: int, total: int, i: int, summary: dict) -> None:
        per_day = ((summary.get("cost") or {}).get("per_day") or {}).get("total")
        cost = "—" if per_day is None else f"${per_day:.2f}/day"
        click.echo(f"[{done}/{total}] plan-{i:04d} {summary['verdict']} {cost} p99 {show(p99_of(summary))}", err=True)

    try:
        res = search(exp, space, out, workers=workers, seed=seed, dask=dask_address, progress=progress)
    except ValueError as e:
        raise click.ClickException(f"{space_file}: {e}") from None
    except RuntimeError as e:  # --dask without the extra, or no scheduler there
        raise click.ClickException(str(e)) from None
    (out / "optimize.json").write_text(json.dumps(res, indent=1, default=str))
    where = f"the Dask cluster at {dask_address} ({res['workers']} task slots)" if dask_address \
        else f"{res['workers']} processes"
    click.echo(f"{res['candidates']} plans run on {where} in {res['wall_s']:.1f} s ({res['invalid']} invalid skipped)")
    npass = sum(r["verdict"] == "pass" for r in res["rows"])
    click.echo(f"{npass} of {res['candidates']} pass every SLO and check")
    if res["pareto"]:
        click.echo("Pareto of the passing plans (cost per day vs worst p99 latency; cheaper, or faster than every cheaper one):")
    for r in res["pareto"]:
        knobs = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        click.echo(f"  ${r['cost_per_day']:.2f}/day  p99 {show(r['p99'])}  {knobs}")
    best = res["best"]
    if best is None:
        click.echo("no plan in the space passes")
        raise SystemExit(1)
    knobs = ", ".join(f"{k}={v}" for k, v in best["settings"].items())
    m = best["margin"]
    click.echo(f"cheapest passing: {knobs}: ${best['cost_per_day']:.2f}/day, p99 {show(best['p99'])}, "
               f"tightest SLO margin {'—' if m is None else f'{m * 100:.0f}%'}")
    click.echo(f"plan: {out / 'best-plan.yaml'}")
