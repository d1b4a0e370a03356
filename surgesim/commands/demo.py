from __future__ import annotations

import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import click


def _builtin(name: str) -> Path:
    return Path(str(files("surgesim.scenarios") / name))


def _step(n: int, text: str) -> None:
    click.secho(f"\n[{n}/3] {text}", bold=True, err=True)


@click.command()
@click.option("--scenario", type=click.Path(path_type=Path), default=None,
              help="Scenario to simulate (default: the built-in dispatch_wave.yaml).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory (default: runs/<id>).")
@click.option("--emulators/--no-emulators", default=True, show_default=True,
              help="Start local Google Cloud and provision the Meridian system first.")
@click.option("--keep-emulators", is_flag=True, help="Leave the emulators the demo started running afterwards.")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None, help="Emulator state directory.")
def demo(scenario: Path | None, out: Path | None, emulators: bool, keep_emulators: bool, state_dir: str | None) -> None:
    """Set up local Google Cloud and run the dispatch-wave scenario end to end.

    \b
    1. start (or reuse) the Pub/Sub, Firestore, BigQuery and Storage emulators and
       provision Meridian Freight's topics, subscriptions, DLQs, tables and buckets;
    2. simulate the morning dispatch wave at production scale (8,200 vehicles);
    3. build the HTML report and print where it is.
    """
    scenario = scenario or _builtin("dispatch_wave.yaml")
    started: list[str] = []
    if emulators:
        from surgesim.emulators import EmulatorError, down, status, up
        from surgesim.emulators.provision import needed_emulators, provision
        from surgesim.schema import load_system

        _step(1, "Local Google Cloud: emulators and provisioning")
        system = load_system(_builtin("systems/meridian.yaml"))
        needed = needed_emulators(system)
        try:
            before = status(needed, state_dir=state_dir, check=False)
            stack = up(needed, project=system.project, state_dir=state_dir, probe=True,
                       on_message=lambda m: click.echo(f"  {m}", err=True))
            started = [n for n in needed if not before[n].present and stack[n].owned]
            outcomes = provision(system, stack.clients)
        except EmulatorError as exc:
            click.echo(f"  {exc}", err=True)
            click.echo("  (run `surgesim demo --no-emulators` to simulate without them)", err=True)
            sys.exit(1)
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.action] = counts.get(o.action, 0) + 1
        click.echo("  provisioned meridian: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), err=True)
    else:
        click.echo("[1/3] skipped: emulators (--no-emulators)", err=True)

    _step(2, f"Simulating {scenario.name}")
    out = out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    sim = subprocess.run([sys.executable, "-m", "surgesim.cli", "sim", str(scenario), "--out", str(out)])
    if not (out / "summary.json").exists():
        click.echo("the simulation did not produce a run directory", err=True)
        sys.exit(sim.returncode or 1)

    _step(3, "Report")
    report = out / "report.html"
    if not report.exists():
        subprocess.run([sys.executable, "-m", "surgesim.cli", "report", str(out)], check=False)
    if started and not keep_emulators:
        from surgesim.emulators import down

        down(started, state_dir=state_dir)
        click.echo(f"  stopped the emulators the demo started ({', '.join(started)}); "
                   "`surgesim demo --keep-emulators` leaves them up", err=True)
    click.echo(f"\nreport: {report.resolve() if report.exists() else '(not built)'}")
    click.echo(f"run directory: {out.resolve()}")
    sys.exit(sim.returncode)
