"""``ecgml predict``: a registered or logged model on anyone's WFDB or Challenge records."""

from __future__ import annotations

from pathlib import Path

import click

from ecgml.cli.options import fail
from ecgml.defaults import DEFAULT_CLASSIFIER_URI


@click.command("predict")
@click.option("--model", "model_uri", default=DEFAULT_CLASSIFIER_URI, show_default=True,
              help="models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/model.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("predictions.csv"),
              show_default=True, help="The CSV written: one row per record, one column per class.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
@click.argument("paths", nargs=-1, required=True)
def predict_command(model_uri: str, out: Path, progress: bool | None, paths: tuple[str, ...]) -> None:
    """Predict every record in PATHS (.hea with .dat or .mat, record paths, folders at any depth).

    Records are checked exactly as the served model checks a request; unreadable or refused records are
    listed with the reason and the rest are still predicted. Exit status 1 when no record was predicted.
    """
    from ecgml.predict import PredictError, predict

    try:
        summary = predict(model_uri, paths, out, progress=progress)
    except (PredictError, OSError) as exc:
        fail(exc)
    for line in summary.lines():
        click.echo(line)
    if summary.count("ok") == 0:
        raise SystemExit(1)


COMMANDS: tuple[click.Command, ...] = (predict_command,)
