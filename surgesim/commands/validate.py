from __future__ import annotations

import sys
from pathlib import Path

import click

from surgesim.schema import SchemaError, validate_file


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check system, plan or scenario FILES; a scenario is checked with its system and plan.

    Prints one line per problem (file:line: field.path: what is wrong) and exits 2 if any
    (bad input, as `sim` and `live` do; 1 is kept for a failed SLO).
    """
    failed = False
    for path in files:
        try:
            kind, _ = validate_file(path)
        except SchemaError as exc:
            failed = True
            for line in exc.problems:
                click.echo(line, err=True)
            continue
        click.echo(f"{path}: valid {kind} file")
    sys.exit(2 if failed else 0)
