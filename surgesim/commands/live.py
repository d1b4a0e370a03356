from __future__ import annotations

import sys
from pathlib import Path

import click

from surgesim.schema import SchemaError


@click.command()
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option("--plan", type=click.Path(path_type=Path), default=None, help="Plan file (overrides the scenario's).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory to write (default runs/<id>).")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Emulator state directory (default: $SURGESIM_HOME or ~/.surgesim).")
@click.option("--time-scale", type=float, default=None,
              help="Scenario seconds per wall second (overrides scenario.live.time_scale).")
@click.option("--rate-scale", type=float, default=None,
              help="Fraction of the volume sent (overrides scenario.live.rate_scale).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on PORT/metrics (at the --bind address) while the run goes "
                   "(default: a free port, printed at start; 0: not served).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Locust worker processes on this machine (scenarios with live.locust: true).")
@click.option("--master", "master", is_flag=True,
              help="Locust's master only: the load comes from `surgesim worker` processes, on this machine or "
                   "others (docs/live.md, Load from several machines).")
@click.option("--expect-workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="With --master: how many workers share the schedule; the test starts when all are connected.")
@click.option("--master-bind", default=None, metavar="HOST[:PORT]",
              help="With --master: where the workers connect (default: the --bind address, port 5557).")
@click.option("--bind", "bind_address", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="The address the harness listens on: the Cloud Run fronts, /metrics and the Locust master. "
                   "127.0.0.1 keeps them to this machine; 0.0.0.0 lets other machines (remote workers, a "
                   "Prometheus) reach them, and anyone else who can reach this machine (docs/live.md, Listen address).")
@click.option("--target-env", type=click.Path(path_type=Path), default=None,
              help="Load only: send the traffic to the system this KEY=VALUE file names (<SERVICE>_URL, "
                   "PUBSUB_EMULATOR_HOST, GOOGLE_CLOUD_PROJECT, SURGESIM_SUBSCRIPTIONS, ...) and start nothing "
                   "else (docs/live.md, Load only).")
def live(scenario: Path, plan: Path | None, out: Path | None, state_dir: str | None, time_scale: float | None,
         rate_scale: float | None, metrics_port: int | None, workers: int, master: bool, expect_workers: int,
         master_bind: str | None, target_env: Path | None, bind_address: str) -> None:
    """Run SCENARIO against the real services on the emulators and write a run directory.

    Real (compressed) time: scenario.live.time_scale scenario seconds per wall second, and
    rate_scale of the volume. Faults are applied on the timeline, SLOs judged at the end.
    Exits 0 when every SLO holds and no message was lost, 1 otherwise, 2 on bad input."""
    from surgesim.commands.sim import verdict_table
    from surgesim.emulators import EmulatorError
    from surgesim.live import interrupts
    from surgesim.live.prometheus import serving
    from surgesim.live.session import LiveAborted, LiveInterrupted, UnsupportedLive, run_live

    # our own SIGINT/SIGTERM, whatever the caller left (an ignored SIGINT from `nohup ... &`):
    # the first interrupts, later ones only hurry the stop (surgesim/live/interrupts.py)
    interrupts.install()
    try:
        if not scenario.is_file():
            click.echo(f"{scenario}: no such file", err=True)
            sys.exit(2)
        import ipaddress

        try:
            bind_ip = ipaddress.ip_address(bind_address)
        except ValueError:
            click.echo(f"--bind: {bind_address!r}: want an IP address of this machine (127.0.0.1, 0.0.0.0, ...)",
                       err=True)
            sys.exit(2)
        if not bind_ip.is_loopback:
            click.echo(f"listening on {bind_address}: the fronts, /metrics and the Locust master accept "
                       "connections from other machines, without authentication (docs/live.md, Listen address)",
                       err=True)
        bind = None
        if not master and (expect_workers != 1 or master_bind is not None):
            click.echo("--expect-workers and --master-bind go with --master", err=True)
            sys.exit(2)
        if master:
            from surgesim.loadtests.distributed import parse_master

            if workers != 1:
                click.echo("--workers and --master: the workers of a --master run are `surgesim worker` "
                           "processes; give their number with --expect-workers", err=True)
                sys.exit(2)
            try:
                bind = parse_master(master_bind or f"{bind_address}:5557")
            except ValueError as exc:
                click.echo(f"--master-bind: {exc}", err=True)
                sys.exit(2)
            workers = expect_workers
        if time_scale is not None or rate_scale is not None:
            from pydantic import ValidationError

            from surgesim.schema.scenario import Live

            over = {k: v for k, v in (("time_scale", time_scale), ("rate_scale", rate_scale)) if v is not None}
            try:
                Live.model_validate(over)
            except ValidationError as exc:
                for e in exc.errors():
                    click.echo(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}", err=True)
                sys.exit(2)
        if target_env is not None:
            if state_dir is not None or metrics_port is not None:
                click.echo("--target-env: a load-only run starts no emulators and serves no /metrics "
                           "(--state-dir and --metrics-port do not apply)", err=True)
                sys.exit(2)
            _load_only(scenario, plan, out, target_env, time_scale, rate_scale, workers, bind)
        try:
            summary, run_dir = run_live(scenario, plan, out, state_dir=state_dir,
                                        say=lambda m: click.echo(m, err=True), time_scale=time_scale,
                                        rate_scale=rate_scale,
                                        while_running=lambda runner: serving(runner, metrics_port,
                                                                             say=lambda m: click.echo(m, err=True),
                                                                             host=bind_address),
                                        workers=workers, master=bind, bind=bind_address)
        except SchemaError as exc:
            for line in exc.problems:
                click.echo(line, err=True)
            sys.exit(2)
        except UnsupportedLive as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)
        except LiveInterrupted as exc:
            where = f" at scenario {exc.at_s:.0f} s" if exc.at_s is not None else ""
            partial = f"; partial run directory: {exc.run_dir}" if exc.run_dir else ""
            click.echo(f"interrupted{where}; " + _stopped(exc.leftovers) + partial, err=True)
            sys.exit(130)
        except KeyboardInterrupt:  # before the runner existed
            click.echo("interrupted; nothing was left running", err=True)
            sys.exit(130)
        except LiveAborted as exc:
            partial = f"; partial run directory: {exc.run_dir}" if exc.run_dir else ""
            click.echo(f"live run failed: {exc}; " + _stopped(exc.leftovers) + partial, err=True)
            sys.exit(1)
        except (EmulatorError, RuntimeError, TimeoutError) as exc:
            click.echo(f"live run failed: {exc}", err=True)
            sys.exit(1)
        verdict_table(summary)  # the SLOs, the implicit checks and a FAILED line per failed check
        click.echo(f"run directory: {run_dir}")
        sys.exit(0 if summary["verdict"] == "pass" else 1)

    finally:
        interrupts.restore()  # the caller's handlers again (a CliRunner, a test)


def _load_only(scenario: Path, plan: Path | None, out: Path | None, target_env: Path, time_scale: float | None,
               rate_scale: float | None, workers: int, master: tuple[str, int] | None) -> None:
    """`--target-env`: surgesim/live/target_run.py; exits like a harnessed run."""
    from surgesim.commands.sim import verdict_table
    from surgesim.loadtests.target_env import TargetEnvError, read_target_env
    from surgesim.live.session import LiveInterrupted, UnsupportedLive
    from surgesim.live.target_run import run_target

    try:
        target = read_target_env(target_env)
        summary, run_dir = run_target(scenario, plan, out, target, target_file=target_env,
                                      say=lambda m: click.echo(m, err=True), time_scale=time_scale,
                                      rate_scale=rate_scale, workers=workers, master=master)
    except (TargetEnvError, SchemaError) as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(2)
    except UnsupportedLive as exc:
        click.echo("load only: " + "\n  ".join(["cannot run:", *exc.problems]), err=True)
        sys.exit(2)
    except LiveInterrupted as exc:
        where = f" at scenario {exc.at_s:.0f} s" if exc.at_s is not None else ""
        click.echo(f"interrupted{where}; the load generator stopped", err=True)
        sys.exit(130)
    except (RuntimeError, TimeoutError) as exc:
        click.echo(f"load-only run failed: {exc}", err=True)
        sys.exit(1)
    verdict_table(summary)
    click.echo(f"run directory: {run_dir}")
    sys.exit(0 if summary["verdict"] == "pass" else 1)


def _stopped(leftovers: list[str]) -> str:
    """Said only after checking: every process the run started is gone, or which are not."""
    if leftovers:
        return "STILL RUNNING after the stop: " + ", ".join(leftovers)
    return "everything stopped"
