"""`histoclr report`: tables and plots of an ablation sweep."""

from __future__ import annotations

from pathlib import Path

import click

from histoclr.cli.options import tracking_uri_option


@click.command("report")
@click.option("--experiment", "-e", default="histoclr-ablation", show_default=True,
              help="MLflow experiment of the sweep (its newest sweep is reported).")
@click.option("--parent-run", default=None, help="Report this sweep's parent run id instead.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/report"),
              show_default=True, help="Folder for summary.csv/.md and the plots.")
@tracking_uri_option
def report(experiment: str, parent_run: str | None, out: Path, tracking_uri: str | None) -> None:
    """Summarise an ablation sweep: mean ± std over seeds per cell, Dice vs label budget plot and a
    bar chart, printed here and logged as artifacts on the sweep's parent run; then the link to the
    experiment's runs in the MLflow UI."""
    from histoclr.ablation.report import build_report
    from histoclr.tracking import runs_link

    rep = build_report(out, experiment=experiment, parent_run_id=parent_run, tracking_uri=tracking_uri)
    click.echo(rep.files[2].read_text())
    click.echo("wrote " + ", ".join(str(f) for f in rep.files) + f" (also on parent run {rep.parent_run_id}, "
               "under report/)")
    click.echo(runs_link(tracking_uri=tracking_uri, experiment_id=rep.experiment_id))
