"""``emulators`` click group: up / down / status / env / probe.

Used by the main CLI as ``from surgesim.emulators.cli import emulators_group``, and
runnable alone: ``python -m surgesim.emulators.cli up``.

``up`` and ``env`` print ``export VAR=value`` lines on stdout (everything else goes to
stderr), so ``eval "$(python -m surgesim.emulators.cli up)"`` configures a shell.
"""

from __future__ import annotations

import json
import sys

import click

from .errors import EmulatorError
from .stack import NAMES, down, status, up

_STATE_DIR = click.option(
    "--state-dir", type=click.Path(file_okay=False), default=None,
    help="State directory (default: $SURGESIM_HOME or ~/.surgesim).",
)
_ONLY = click.option(
    "--only", default=None, metavar="NAMES",
    help=f"Comma-separated subset of: {','.join(NAMES)} (default: all but postgres).",
)


def _err(msg: str) -> None:
    click.echo(msg, err=True)


@click.group("emulators")
def emulators_group() -> None:
    """Local Google Cloud: the Pub/Sub, Firestore, BigQuery and Storage emulators, and
    PostgreSQL with pgvector (--only postgres)."""


@emulators_group.command("up")
@_ONLY
@click.option("--project", default=None, help="Project id (default: the recorded one, else surgesim-local).")
@click.option("--pubsub-port", type=int, default=None, help="Pub/Sub emulator port (default 8085).")
@click.option("--firestore-port", type=int, default=None, help="Firestore emulator port (default 8086).")
@click.option("--firestore-events-port", type=int, default=None,
              help="Port the Firestore emulator sends trigger events to; the live harness serves it (default 8089).")
@click.option("--bigquery-port", type=int, default=None, help="BigQuery emulator REST port (default 9050).")
@click.option("--bigquery-grpc-port", type=int, default=None, help="BigQuery emulator gRPC port (default 9060).")
@click.option("--storage-port", type=int, default=None, help="Storage emulator port (default 9023).")
@click.option("--postgres-port", type=int, default=None, help="PostgreSQL + pgvector port (default 54329).")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for each emulator to answer.")
@click.option("--probe/--no-probe", default=True, show_default=True, help="Run the Pub/Sub fidelity probe.")
@_STATE_DIR
def up_cmd(only, project, pubsub_port, firestore_port, firestore_events_port, bigquery_port, bigquery_grpc_port,
           storage_port, postgres_port, timeout, probe, state_dir) -> None:
    """Start (or reuse) the emulators; print export lines for the shell."""
    ports = {
        "pubsub": pubsub_port, "firestore": firestore_port, "firestore_events": firestore_events_port,
        "bigquery": bigquery_port, "bigquery_grpc": bigquery_grpc_port, "storage": storage_port,
        "postgres": postgres_port,
    }
    try:
        stack = up(only, ports={k: v for k, v in ports.items() if v}, project=project, state_dir=state_dir,
                   timeout=timeout, probe=probe, on_message=_err)
    except (EmulatorError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    for line in stack.export_lines():
        click.echo(line)


@emulators_group.command("down")
@_ONLY
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
@_STATE_DIR
def down_cmd(only, timeout, state_dir) -> None:
    """Stop exactly the emulators surgesim started (per the state file)."""
    try:
        result = down(only, state_dir=state_dir, timeout=timeout)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    for msg in result.messages:
        _err(msg)
    if result.ports_still_open:
        sys.exit(1)


@emulators_group.command("status")
@_ONLY
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_STATE_DIR
def status_cmd(only, as_json, state_dir) -> None:
    """Each emulator: running/unhealthy/dead/external/stopped, ours or not, healthy."""
    try:
        stack = status(only, state_dir=state_dir)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(
            {"state_dir": str(stack.state_dir), "project": stack.project,
             "emulators": {n: vars(s) for n, s in stack.emulators.items()}}, indent=2))
        return
    click.echo(f"state dir {stack.state_dir}  project {stack.project}")
    for s in stack.emulators.values():
        click.echo(s.line())


@emulators_group.command("env")
@_STATE_DIR
def env_cmd(state_dir) -> None:
    """Print export lines for what the state directory records."""
    for line in status(state_dir=state_dir, check=False).export_lines():
        click.echo(line)


@emulators_group.command("probe")
@_STATE_DIR
def probe_cmd(state_dir) -> None:
    """Re-measure which Pub/Sub features the running emulator applies."""
    from .probe import probe_pubsub

    stack = status("pubsub", state_dir=state_dir)
    if not stack["pubsub"].healthy:
        raise click.ClickException("no healthy Pub/Sub emulator recorded; run `emulators up` first")
    report = probe_pubsub(stack.endpoint("pubsub"), stack.project, state_dir=stack.state_dir)
    click.echo(report.summary())
    click.echo(json.dumps(report.to_dict(), indent=2))


if __name__ == "__main__":
    emulators_group(prog_name="python -m surgesim.emulators.cli")
