from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from surgesim.schema import SchemaError, load_plan, load_system


def listing_table(rows: list[dict], title: str, file=None) -> None:
    """The table of what listens where, never cut: to a pipe or file (not a terminal) at
    its natural width, whatever COLUMNS says; on a narrow terminal cells fold onto more
    lines instead of ending in an ellipsis (the ports must stay readable)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("kind", "name", "listens on", "pid", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["kind"], r["name"], r["url"], str(r["pid"] or ""), r["detail"])
    out = file or sys.stdout
    tty = hasattr(out, "isatty") and out.isatty()
    Console(file=out, width=None if tty else 100_000, soft_wrap=not tty).print(table)


@click.command()
@click.argument("system_file", type=click.Path(path_type=Path))
@click.option("--plan", "plan_file", type=click.Path(path_type=Path), default=None,
              help="Plan file: the Cloud Run fronts' concurrency, instances and cold starts.")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Emulator state directory (default: $SURGESIM_HOME or ~/.surgesim).")
@click.option("--log-dir", type=click.Path(file_okay=False), default=None,
              help="Where each service's log goes (default: a new temporary directory).")
@click.option("--keep-emulators", is_flag=True, help="Leave the emulators this started running on exit.")
def up(system_file: Path, plan_file: Path | None, state_dir: str | None, log_dir: str | None,
       keep_emulators: bool) -> None:
    """Run SYSTEM_FILE's services for real on this machine until Ctrl-C.

    Starts (or reuses) the emulators, provisions the stores, starts a fake for each
    external API, each service as its own process behind a local Cloud Run front, and the
    bridges (push delivery, filters, Firestore triggers, BigQuery subscriptions). Prints
    where everything listens. Ctrl-C or SIGTERM stops it all; nothing is left running."""
    from surgesim.emulators import EmulatorError
    from surgesim.live import SystemRunner, interrupts

    interrupts.install()  # whatever SIGINT disposition the caller left (issue 18)

    try:
        system = load_system(system_file)
        plan = load_plan(plan_file, system) if plan_file else None
    except SchemaError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(2)
    runner = SystemRunner(system, plan, state_dir, log_dir=log_dir, keep_emulators=keep_emulators,
                          on_message=lambda m: click.echo(m, err=True), base_dir=system_file.resolve().parent)
    try:
        with runner:
            listing_table(runner.listing(), f"{system.name}" + (f" / plan {plan.name}" if plan else ""))
            click.echo(f"service logs: {runner.log_dir}")
            # the fakes' admin APIs answer only this run's token (docs/bridges.md, who may call whom)
            click.echo(f"fake admin APIs: Authorization: Bearer {runner.admin_token}")
            click.echo(f"ID-token certificates (for handlers that verify tokens): {runner.certs_url}/oauth2/v1/certs")
            click.echo("Ctrl-C stops everything.")
            while True:  # until KeyboardInterrupt (SIGINT or SIGTERM); a dead emulator ends it too
                time.sleep(1.0)
                if runner.watchdog is not None and runner.watchdog.fatal:
                    raise RuntimeError(runner.watchdog.fatal)
    except KeyboardInterrupt:
        left = runner.stopped_report
        click.echo("stopped." if not left else "STILL RUNNING after the stop: " + ", ".join(left), err=True)
        if left:
            sys.exit(1)
    except (EmulatorError, RuntimeError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
