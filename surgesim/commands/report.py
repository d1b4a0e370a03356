"""`surgesim report RUN...`: rebuild one run's report, or combine several runs."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for a comparison or calibration report (required with several runs).")
@click.option("--kind", type=click.Choice(["auto", "compare", "calibrate"]), default="auto", show_default=True,
              help="With several runs: auto picks calibration for one sim and one live run of a scenario, "
                   "else a plan comparison.")
@click.option("--junit/--no-junit", default=True, show_default=True, help="Also write junit.xml (one run).")
def report(runs: tuple[Path, ...], out: Path | None, kind: str, junit: bool) -> None:
    """Build report.html for a run directory, or compare several.

    \b
    surgesim report runs/<id>                          rebuild runs/<id>/report.html (+ junit.xml)
    surgesim report runs/a runs/b --out runs/cmp       plan comparison (or sim-vs-live calibration)
    """
    from surgesim.rundir import load_run

    try:
        loaded = [load_run(r) for r in runs]
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from None
    if len(runs) == 1:
        from surgesim.reports import build_report, write_junit

        path = build_report(runs[0])
        click.echo(f"report:  {path}")
        if junit:
            click.echo(f"junit:   {write_junit(runs[0])}")
        summary = loaded[0].summary
        if summary.get("interrupted"):
            click.echo(f"interrupted at scenario {float(summary.get('interrupted_at_s') or 0):.0f} s: "
                       "partial data until then, no verdict")
        click.echo(f"verdict: {str(summary.get('verdict', '?')).upper()}")
        return
    if out is None:
        raise click.UsageError("several runs need --out DIR for the combined report")
    from surgesim.reports import build_calibration, build_comparison, calibration_pair

    pair = calibration_pair([l.summary for l in loaded])
    if kind == "calibrate" or (kind == "auto" and pair is not None):
        if pair is None:
            raise click.UsageError("calibration needs exactly one sim run and one live run")
        sim, live = (runs[pair[0]], runs[pair[1]])
        click.echo(f"calibration: {build_calibration(sim, live, out)}")
    else:
        click.echo(f"comparison: {build_comparison(list(runs), out)}")
