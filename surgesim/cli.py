"""The `surgesim` command. Subcommands load lazily so `surgesim --help` stays fast and a
broken optional part never takes the whole CLI down."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

# name -> (module, attribute, one-line help shown in `surgesim --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("surgesim.commands.demo", "demo", "Set up local Google Cloud and run the dispatch-wave scenario."),
    "validate": ("surgesim.commands.validate", "validate", "Check a system, plan or scenario file."),
    "schema": ("surgesim.commands.schema", "schema", "Print the JSON Schema of a file kind, for editor completion."),
    "emulators": ("surgesim.emulators.cli", "emulators_group", "Start, stop or inspect the local Google Cloud emulators."),
    "provision": ("surgesim.commands.provision", "provision", "Create a system file's topics, subscriptions, databases and tables."),
    "sim": ("surgesim.commands.sim", "sim", "Run a scenario in the discrete-event simulator."),
    "compare": ("surgesim.commands.compare", "compare", "Run one scenario under several plans, side by side."),
    "optimize": ("surgesim.commands.optimize", "optimize", "Search a space of plans for the cheapest that meets the SLOs."),
    "calibrate": ("surgesim.commands.calibrate", "calibrate", "Fit the simulator to a live run and write a plan overlay."),
    "report": ("surgesim.commands.report", "report", "Build or combine HTML reports from run directories."),
    "up": ("surgesim.commands.up", "up", "Start emulators, provision and run a system's services."),
    "live": ("surgesim.commands.live", "live", "Run a scenario against the real services on the emulators."),
    "worker": ("surgesim.commands.worker", "worker", "Send a share of a `live --master` run's load from this machine."),
    "import": ("surgesim.commands.importers", "import_group", "Build a system file from your Terraform (or check it against one)."),
}


# Commands that need an extra (pyproject.toml), and modules whose absence means it is missing.
EXTRAS: dict[str, str] = {"demo": "live", "emulators": "live", "provision": "live", "up": "live", "live": "live",
                          "worker": "locust"}
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "locust": ("locust", "gevent"),
    "live": ("psutil", "httpx", "aiohttp", "fastapi", "uvicorn", "google.cloud.pubsub_v1", "google.cloud.firestore",
             "google.cloud.bigquery", "google.cloud.storage", "gcp_storage_emulator"),
}


def missing_extra(command: str) -> str | None:
    """A one-line message when `command` needs an extra that is not installed, else None."""
    extra = EXTRAS.get(command)
    if extra is None:
        return None
    absent = [m for m in EXTRA_MODULES[extra] if not _available(m)]
    if not absent:
        return None
    return (f"`surgesim {command}` needs the `{extra}` extra, which is not installed "
            f"(missing: {', '.join(absent)}). Install it with: pip install 'surgesim[{extra}]'")


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _, _) in COMMANDS.items() if _available(module)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _available(COMMANDS[name][0]):
            return None
        problem = missing_extra(name)
        if problem is not None:
            @click.command(name=name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                           add_help_option=False)
            def needs_extra() -> None:
                click.echo(problem, err=True)
                sys.exit(2)

            return needs_extra
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="surgesim")
def cli() -> None:
    """Rehearse an event-driven Google Cloud system under load, on one machine.

    \b
    Start here:
      surgesim demo                                  set up and run the dispatch wave
      surgesim validate scenarios/dispatch_wave.yaml check a file
      surgesim emulators up                          local Pub/Sub, Firestore, BigQuery, Storage
    """


def main() -> None:
    cli(prog_name="surgesim")


if __name__ == "__main__":
    main()
