from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option("--master-host", "master", required=True, metavar="HOST[:PORT]",
              help="The machine running `surgesim live --master` (port default 5557).")
@click.option("--target-env", type=click.Path(path_type=Path), default=None,
              help="KEY=VALUE file of the system's endpoints (<SERVICE>_URL, PUBSUB_EMULATOR_HOST, "
                   "GOOGLE_CLOUD_PROJECT, ...); default: this shell's environment. "
                   "`surgesim live --master` writes one: runs/<id>/loadgen/target.env.")
@click.option("--time-scale", type=float, default=None, help="The master's --time-scale, if it was given one.")
@click.option("--rate-scale", type=float, default=None, help="The master's --rate-scale, if it was given one.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where this worker keeps its own copy of its results (default: a temporary directory).")
def worker(scenario: Path, master: str, target_env: Path | None, time_scale: float | None, rate_scale: float | None,
           out: Path | None) -> None:
    """A Locust worker for a `surgesim live --master` run on another machine: it sends its
    share of SCENARIO's seeded schedule to the system named by --target-env (it starts
    nothing itself) and hands its measurements to the master, which merges them into the
    run directory. Exits when the master ends the test; 2 on bad input."""
    import os

    from surgesim.loadtests.distributed import parse_master, run_worker
    from surgesim.loadtests.plan import LivePlan, endpoints_from_env, missing_endpoints
    from surgesim.loadtests.target_env import TargetEnvError, read_target_env
    from surgesim.schema import SchemaError

    if not scenario.is_file():
        click.echo(f"{scenario}: no such file", err=True)
        sys.exit(2)
    try:
        where = parse_master(master)
    except ValueError as exc:
        click.echo(f"--master-host: {exc}", err=True)
        sys.exit(2)
    try:
        env = read_target_env(target_env) if target_env is not None else {}
        plan = LivePlan(scenario, time_scale=time_scale, rate_scale=rate_scale)
    except TargetEnvError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except SchemaError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(2)
    missing = missing_endpoints(plan, endpoints_from_env(plan, {**os.environ, **env}))
    if missing:
        click.echo(f"{target_env or 'the environment'}: no {', '.join(missing)} "
                   f"(the endpoints {scenario} sends to)", err=True)
        sys.exit(2)
    click.echo(f"worker: {plan.exp.scenario.name} for the master at {where[0]}:{where[1]}; "
               "waiting for it to start the test", err=True)
    try:
        rc = run_worker(scenario, where, env, out_dir=out, time_scale=time_scale, rate_scale=rate_scale)
    except KeyboardInterrupt:
        click.echo("interrupted; the worker stopped", err=True)
        sys.exit(130)
    sys.exit(rc)
