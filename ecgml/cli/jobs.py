"""``ecgml calibrate``, ``evaluate`` and ``main``: jobs on registered models, and the embedded study."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ecgml.cli.options import (
    fail,
    float_list,
    int_list,
    jobs_option,
    label_space_options,
    name_list,
    prepare_config,
    runs_dir_option,
    stack,
)
from ecgml.config import SOURCES, default_data_dir
from ecgml.data.labels import DEFAULT_LABEL_MAP, LABEL_MAPS
from ecgml.defaults import (
    CALIBRATE_EXPERIMENT,
    CALIBRATION_METHODS,
    DEFAULT_BACKBONE,
    DEFAULT_CALIBRATION_METHOD,
    DEFAULT_CLASSIFIER_URI,
    DEFAULT_SPLITS,
    DEFAULT_TARGET,
    EVALUATE_EXPERIMENT,
    STANDALONE_BACKBONES,
    STUDY_EXPERIMENT,
)
from ecgml.posttrain.evaluate import SPLITS
from ecgml.workflow.main import MAIN_TARGETS


@click.command("calibrate")
@click.option("--model", "model_uri", default=DEFAULT_CLASSIFIER_URI, show_default=True,
              help="models:/NAME/VERSION, models:/NAME@ALIAS (production falls back to the latest version) "
                   "or runs:/RUN_ID (measured only, not registered).")
@click.option("--method", type=click.Choice([DEFAULT_CALIBRATION_METHOD, *CALIBRATION_METHODS]),
              default=DEFAULT_CALIBRATION_METHOD, show_default=True,
              help="The map the registered version applies: one temperature, one per class, Platt scaling (slope "
                   "and bias per class), or auto (lowest cross-validated validation NLL). All are reported.")
@click.option("--register-as", default=None, help="Registered model name [default: the source model's name].")
@click.option("--bins", type=click.IntRange(2), default=10, show_default=True, help="Reliability bins.")
@click.option("--experiment", default=CALIBRATE_EXPERIMENT, show_default=True)
@runs_dir_option()
def calibrate_command(model_uri: str, method: str, register_as: str | None, bins: int, experiment: str,
                      runs_dir: Path | None) -> None:
    """Calibrate a classifier on its validation predictions (temperature or Platt scaling); report test
    ECE/MCE/Brier before and after, and why a calibration cannot help; register the calibrated version (its
    pyfunc applies the map)."""
    from ecgml.posttrain.calibrate import CalibrationError, run_calibration
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.store import TrackingError

    try:
        outcome = run_calibration(model_uri, method=method, register_as=register_as, experiment=experiment,
                                  runs_dir=runs_dir or default_data_dir() / "runs", n_bins=bins)
    except (OSError, CalibrationError, RegistryError, TrackingError) as exc:
        fail(exc)
    m = outcome.calibration.metrics()
    click.echo(f"run {outcome.run_id}: {outcome.calibration.summary()}, Brier "
               f"{m['test_macro_brier_before']:.4f} -> {m['test_macro_brier_after']:.4f}"
               + (f"; registered {outcome.registered}" if outcome.registered else ""))
    for note in outcome.calibration.diagnosis:
        click.echo(f"warning: {note}", err=True)
    from ecgml.tracking.runs import produced_text

    click.echo(produced_text(outcome.run_id, outcome.registered))


@click.command("evaluate")
@click.option("--model", "model_uri", default=DEFAULT_CLASSIFIER_URI, show_default=True,
              help="models:/NAME/VERSION or models:/NAME@ALIAS, loaded exactly as it is served.")
@click.option("--source", type=click.Choice(SOURCES), default="g12ec", show_default=True)
@click.option("--root", default=None, help="Dataset root [default: the synthetic tree of that source].")
@click.option("--label-map", type=click.Choice(LABEL_MAPS), default=DEFAULT_LABEL_MAP, show_default=True)
@click.option("--splits", default=DEFAULT_SPLITS, show_default=True, help="train/val/test folds.")
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True,
              help="The records scored (all: every labelled record, for --zero-shot).")
@click.option("--zero-shot", is_flag=True,
              help="Score a model on a dataset it was not trained on (a PTB-XL backbone on a Challenge collection): "
                   "its own classes on the dataset's classes with the same SNOMED CT codes; the others are listed.")
@stack(label_space_options())
@click.option("--bootstrap", type=click.IntRange(10), default=1000, show_default=True, help="Bootstrap rounds.")
@click.option("--experiment", default=EVALUATE_EXPERIMENT, show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
@runs_dir_option()
def evaluate_command(model_uri: str, source: str, root: str | None, label_map: str, splits: str, split: str,
                     zero_shot: bool, min_positives: int, classes: str, tranche: str, allow_overlap: bool,
                     bootstrap: int, experiment: str, cache_dir: Path | None, runs_dir: Path | None) -> None:
    """Score a registered model, as served (calibration included), on a dataset split; log metrics and plots."""
    from ecgml.posttrain.evaluate import EvaluationError, run_evaluation
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.store import TrackingError

    config = prepare_config(source=source, root=root, label_map=label_map, splits=splits, cache_dir=cache_dir,
                            workers=os.cpu_count() or 1, min_positives=min_positives, classes=classes,
                            tranche=tranche, allow_overlap=allow_overlap)
    try:
        outcome = run_evaluation(model_uri, config, split=split, experiment=experiment, bootstrap_rounds=bootstrap,
                                 runs_dir=runs_dir or default_data_dir() / "runs", zero_shot=zero_shot)
    except (OSError, ValueError, KeyError, EvaluationError, RegistryError, TrackingError) as exc:
        fail(exc)
    m, prefix = outcome.metrics, "test" if split == "all" else split
    if outcome.zero_shot is not None:
        mapping = outcome.zero_shot
        click.echo(f"zero-shot: {len(mapping['classes'])} class(es) scored from the model's own: " + "; ".join(
            f"{c} <- {', '.join(mapping['from'][c])}" for c in mapping["classes"]))
        if mapping["no_equivalent"]:
            click.echo("zero-shot: no equivalent among the model's classes, not scored: " + ", ".join(
                d["description"] for d in mapping["no_equivalent"]))
    click.echo(f"run {outcome.run_id}: {split} macro AUC {m[f'{prefix}_macro_auc']:.4f} "
               f"[{m[f'{prefix}_macro_auc_low']:.4f}, {m[f'{prefix}_macro_auc_high']:.4f}], AUPRC "
               f"{m[f'{prefix}_macro_auprc']:.4f}, ECE {m[f'{prefix}_macro_ece']:.4f}; predictions "
               f"{outcome.predictions}")
    from ecgml.tracking.runs import produced_text

    click.echo(produced_text(outcome.run_id))


@click.command("main")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Data folder [default: $ECGML_DATA or ./data].")
@click.option("--ptbxl-records", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--target", type=click.Choice(MAIN_TARGETS), default=DEFAULT_TARGET, show_default=True,
              help="The dataset fine-tuned and compared on, as a synthetic tree of its shape (cinc: the synthetic "
                   "Georgia tree read as a Challenge collection, with its own SNOMED CT codes).")
@click.option("--target-records", "--g12ec-records", "target_records", type=click.IntRange(1), default=4000,
              show_default=True, help="Records of the synthetic target tree.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic data.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="0 = all cores.")
@click.option("--fractions", default="0.25,0.025", show_default=True,
              help="Target training fractions compared (of 4,000 records: 800 and 80 training records).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Training seeds of every comparison.")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True)
@click.option("--standalone", default=",".join(STANDALONE_BACKBONES), show_default=True,
              help="Standalone baseline backbones (one per family).")
@click.option("--epochs", type=click.IntRange(1), default=15, show_default=True)
@click.option("--pretrain-epochs", type=click.IntRange(1), default=15, show_default=True)
@click.option("--report-dir", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
@click.option("--experiment", default=STUDY_EXPERIMENT, show_default=True)
@click.option("--device", default="auto", show_default=True)
@jobs_option()
def main_command(out_dir: Path | None, ptbxl_records: int, target: str, target_records: int, seed: int,
                 workers: int, fractions: str, seeds: str, backbone: str, standalone: str, epochs: int,
                 pretrain_epochs: int, report_dir: Path, experiment: str, device: str, jobs: int | None) -> None:
    """The embedded default job: a compact study on synthetic data (data, pretrain, register, promote,
    fine-tune, calibrate, evaluate, fine-tuned vs standalone sweep, report), each step a child run."""
    from ecgml.models import get_backbone_entry
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.store import TrackingError
    from ecgml.workflow.main import MainConfig, run_main

    try:
        families = name_list(standalone)
        for name in (backbone, *families):
            get_backbone_entry(name)
        config = MainConfig(data_dir=out_dir or default_data_dir(), ptbxl_records=ptbxl_records,
                            target=target, target_records=target_records, data_seed=seed, workers=workers,
                            fractions=float_list(fractions, "--fractions"), seeds=int_list(seeds, "seed"),
                            backbone=backbone, standalone_backbones=families, epochs=epochs,
                            pretrain_epochs=pretrain_epochs, experiment=experiment, report_dir=report_dir,
                            device=device, jobs=jobs)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        run_main(config)
    except (OSError, ValueError, KeyError, RegistryError, TrackingError) as exc:
        fail(exc)


COMMANDS: tuple[click.Command, ...] = (calibrate_command, evaluate_command, main_command)
