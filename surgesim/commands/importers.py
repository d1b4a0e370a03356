"""`surgesim import terraform DIR`: a system file and a plan from the user's Terraform."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group(name="import")
def import_group() -> None:
    """Build a system file from infrastructure code you already keep."""


@import_group.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the system file here (default: print it).")
@click.option("--plan-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the capacity Terraform declares (scaling, concurrency, cpu, memory) as a plan file.")
@click.option("-var", "--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="Set a Terraform variable, as `terraform plan -var` (repeatable).")
@click.option("-var-file", "--var-file", "var_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A .tfvars file (repeatable).")
@click.option("--name", default=None, help="The system's name (default: the directory's).")
@click.option("--check", "check", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Compare with this system file instead of writing one: exit 1 when they disagree.")
def terraform(directory: Path, output: Path | None, plan_out: Path | None, variables: tuple[str, ...],
              var_files: tuple[Path, ...], name: str | None, check: Path | None) -> None:
    """Import the Terraform configuration in DIRECTORY (its *.tf files and local modules).

    \b
    Exit status: 0 imported (or, with --check, in agreement); 1 with --check, the system
    file and the Terraform disagree; 2 the Terraform could not be imported (one line per
    problem: file:line: resource: attribute: why).
    """
    from surgesim.importers.terraform import ImportError_, import_terraform
    from surgesim.importers.terraform.drift import drift
    from surgesim.schema import SchemaError, load_system
    from surgesim.schema.system import System

    try:
        imported = import_terraform(directory, variables=list(variables), var_files=list(var_files),
                                    name=name)
    except ImportError_ as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        click.echo(f"{len(exc.problems)} problem(s): nothing written", err=True)
        sys.exit(2)
    if check is not None:
        try:
            declared = load_system(check)
        except SchemaError as exc:
            for line in exc.problems:
                click.echo(line, err=True)
            sys.exit(2)
        lines = drift(declared, System.model_validate(imported.system), imported.origins, imported.left_out)
        if lines:
            click.echo(f"{check} disagrees with the Terraform in {directory} ({len(lines)} difference(s)):")
            for line in lines:
                click.echo(f"  {line}")
            sys.exit(1)
        click.echo(f"{check} agrees with the Terraform in {directory}")
        return
    text = imported.system_yaml(directory)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    if plan_out is not None:
        plan_out.write_text(imported.plan_yaml(directory), encoding="utf-8")
        click.echo(f"wrote {plan_out}", err=True)
    if output is not None:
        for line in imported.notes:
            click.echo(f"note: {line}", err=True)
        for line in imported.skipped:
            click.echo(f"left out: {line}", err=True)
