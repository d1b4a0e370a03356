from __future__ import annotations

import shutil
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
              help="Start private local Google Cloud emulators and provision the system first.")
def demo(scenario: Path | None, out: Path | None, emulators: bool) -> None:
    """Set up local Google Cloud and run the dispatch-wave scenario end to end.

    \b
    1. start the Pub/Sub, Firestore, BigQuery and Storage emulators in a private state
       directory on free ports (never anyone else's), and provision the scenario's
       system: its topics, subscriptions, dead-letter topics, tables and buckets;
    2. simulate the morning dispatch wave at production scale (8,200 vehicles);
    3. build the HTML report; the emulators are stopped again.
    """
    import tempfile

    scenario = scenario or _builtin("dispatch_wave.yaml")
    began = time.monotonic()
    if emulators:
        from surgesim.emulators import EmulatorError, down, up
        from surgesim.emulators.provision import needed_emulators, provision
        from surgesim.ports import free_port
        from surgesim.schema import load_experiment

        _step(1, "Local Google Cloud: emulators on free ports, then the system's topics, subscriptions and tables")
        system = load_experiment(scenario).system
        needed = needed_emulators(system)
        state_dir = tempfile.mkdtemp(prefix="surgesim-demo-")
        ports = {key: free_port() for key in ("pubsub", "firestore", "firestore_events", "bigquery", "bigquery_grpc",
                                               "storage")}
        try:
            stack = up(needed, ports=ports, project=system.project, state_dir=state_dir, probe=False,
                       on_message=lambda m: click.echo(f"  {m}", err=True))
            outcomes = provision(system, stack.clients)
        except EmulatorError as exc:
            down(state_dir=state_dir)
            shutil.rmtree(state_dir, ignore_errors=True)
            click.echo(f"  {exc}", err=True)
            click.echo("  (run `surgesim demo --no-emulators` to simulate without them)", err=True)
            sys.exit(1)
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.action] = counts.get(o.action, 0) + 1
        click.echo(f"  provisioned {system.name}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), err=True)
        down(state_dir=state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)  # the demo's own emulators' data and logs
        click.echo("  emulators stopped (the simulation needs none; `surgesim live` runs against them)", err=True)
    else:
        click.echo("[1/3] skipped: emulators (--no-emulators)", err=True)

    _step(2, f"Simulating {scenario.name} (a production-scale morning)")
    out = out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    sim = subprocess.run([sys.executable, "-m", "surgesim.cli", "sim", str(scenario), "--out", str(out)],
                         stdout=subprocess.DEVNULL)
    if not (out / "summary.json").exists():
        click.echo("the simulation did not produce a run directory", err=True)
        sys.exit(sim.returncode or 1)

    _step(3, "Report")
    report = out / "report.html"
    if not report.exists():
        subprocess.run([sys.executable, "-m", "surgesim.cli", "report", str(out)], check=False,
                       stdout=subprocess.DEVNULL)
    import json

    summary = json.loads((out / "summary.json").read_text())
    failed = [r["text"] for r in summary.get("slos", []) if not r["holds"]]
    failed += [c["text"] for c in summary.get("checks", []) if not c["holds"]]
    verdict = summary["verdict"].upper()
    click.echo(f"\nverdict: {verdict}" + (f" ({len(failed)} failed: {'; '.join(failed[:3])})" if failed else "")
               + f" in {time.monotonic() - began:.0f} s")
    if report.exists():
        click.echo(f"report: {report.resolve().as_uri()}")
        click.echo("Look first at the SLO table, then at the backlog plot: how high each subscription's queue "
                   "rose during the wave and how long it took to drain.")
    sys.exit(sim.returncode)
