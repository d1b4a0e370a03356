from __future__ import annotations

import sys
from pathlib import Path

import click

from surgesim.schema import SchemaError, load_system


@click.command()
@click.argument("system_file", type=click.Path(path_type=Path))
@click.option("--up/--no-up", "start", default=False,
              help="Start (or reuse) the emulators the system needs before provisioning.")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Emulator state directory (default: $SURGESIM_HOME or ~/.surgesim).")
def provision(system_file: Path, start: bool, state_dir: str | None) -> None:
    """Create SYSTEM_FILE's topics, subscriptions, Firestore databases, BigQuery tables and buckets.

    Idempotent: a second run changes nothing and says so. Uses the emulators recorded by
    `surgesim emulators up` (or started here with --up).
    """
    from surgesim.emulators import Clients, EmulatorError, status, up
    from surgesim.emulators.provision import needed_emulators, provision as run_provision

    try:
        system = load_system(system_file)
    except SchemaError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(2)
    needed = needed_emulators(system)
    try:
        if start:
            stack = up(needed, project=system.project, state_dir=state_dir,
                       on_message=lambda m: click.echo(m, err=True))
        else:
            stack = status(needed, state_dir=state_dir)
            missing = [n for n in needed if not stack[n].present]
            if missing:
                click.echo(f"{', '.join(missing)} emulator(s) not running: start them with "
                           f"`surgesim emulators up` or pass --up", err=True)
                sys.exit(1)
        clients = Clients(stack.env_vars(), project=system.project)
        counts: dict[str, int] = {}

        def say(o) -> None:
            counts[o.action] = counts.get(o.action, 0) + 1
            detail = f"  ({o.detail})" if o.detail else ""
            click.echo(f"{o.action:<9} {o.kind:<12} {o.name}{detail}")

        run_provision(system, clients, say)
    except EmulatorError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    total = sum(counts.values())
    if counts.get("conflict"):
        click.echo(f"{counts['conflict']} of {total} resources conflict with what exists", err=True)
        sys.exit(1)
    if set(counts) <= {"unchanged"}:
        click.echo(f"{system.name}: all {total} resources already provisioned; nothing changed")
    else:
        summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
        click.echo(f"{system.name}: {summary}")
