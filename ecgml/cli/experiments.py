"""``ecgml experiment`` and ``report``: the study's sweeps and their Markdown report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ecgml.cli.options import (
    FS_CHOICES,
    backbone_kwargs_option,
    cv_option,
    fail,
    int_list,
    jobs_option,
    name_list,
    target_option,
)
from ecgml.config import DEFAULT_FINETUNE_STRATEGY, STRATEGIES, default_data_dir
from ecgml.data.label_space import DEFAULT_MIN_POSITIVES
from ecgml.data.labels import PTBXL_TASKS
from ecgml.defaults import DEFAULT_BACKBONE, DEFAULT_FS, STANDALONE_BACKBONES, STUDY_EXPERIMENT
from ecgml.experiments.schema import PROTOCOLS, SWEEPS


@click.command("experiment")
@click.argument("name", type=click.Choice(SWEEPS))
@click.option("--values", default=None, help="The swept values, comma-separated [default: the study's list].")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default=PROTOCOLS[0], show_default=True,
              help="standard: PTB-XL folds 1-8/9/10, random crops, separate target val/test folds; seed: the "
                   "original's choices (PTB-XL test fold 5, target fold 10 for val and test, centre crops, gradual "
                   "unfreezing).")
@click.option("--seeds", default="0,1,2", show_default=True)
@target_option()
@click.option("--source-root", "--ptbxl-root", "source_root", default=None,
              help="Root of the source (PTB-XL) [default: the synthetic tree].")
@click.option("--target-root", "--g12ec-root", "target_root", default=None,
              help="Root of the target [default: the synthetic tree of that target].")
@click.option("--min-positives", type=click.IntRange(1), default=DEFAULT_MIN_POSITIVES, show_default=True,
              help="A target with its own label space (cinc): keep codes with this many positive records.")
@click.option("--classes", default="", help="A target with its own label space: exactly these codes.")
@click.option("--tranche", default="", help="Challenge collections: only these record-id prefixes.")
@click.option("--fs", type=FS_CHOICES, default=str(DEFAULT_FS), show_default=True)
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True, help="Pretrained and fine-tuned backbone.")
@backbone_kwargs_option()
@click.option("--standalone", default=",".join(STANDALONE_BACKBONES), show_default=True)
@click.option("--backbone-uri", default=None,
              help="Fine-tune this registered backbone where the sweep does not vary pretraining.")
@click.option("--pretrain-task", type=click.Choice(PTBXL_TASKS), default="all", show_default=True)
@click.option("--pretrain-epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", type=float, default=1e-2, show_default=True)
@click.option("--strategy", type=click.Choice(STRATEGIES), default=DEFAULT_FINETUNE_STRATEGY, show_default=True,
              help="Fine-tuning strategy where the sweep does not vary it.")
@jobs_option()
@cv_option("K-fold cross-validation of every fine-tuned and standalone run (a target with its own label space): "
           "each a parent run with a child per fold on the same stored folds, the arms compared fold by fold "
           "[0: the stored train/val/test folds]. Such runs are not calibrated.")
@click.option("--calibrate-all", is_flag=True, help="Also calibrate every fine-tuned and standalone run.")
@click.option("--experiment", default=STUDY_EXPERIMENT, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--report-dir", type=click.Path(path_type=Path), default=None,
              help="Also write the report of this sweep here.")
def experiment_command(name: str, values: str | None, protocol: str, seeds: str, target: str,
                       source_root: str | None, target_root: str | None, min_positives: int, classes: str,
                       tranche: str, fs: str, backbone: str, backbone_kwargs: dict[str, Any],
                       standalone: str, backbone_uri: str | None, pretrain_task: str, pretrain_epochs: int,
                       epochs: int, batch_size: int, lr: float, strategy: str, jobs: int | None, cv: int,
                       calibrate_all: bool, experiment: str, device: str, report_dir: Path | None) -> None:
    """Run one sweep of the study: a parent run with a child run per setting, arm and seed."""
    from ecgml.experiments.study import StudyConfig, check_values, parse_values, run_sweep
    from ecgml.models import get_backbone_entry
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.store import TrackingError

    try:
        families = name_list(standalone)
        for model_name in (backbone, *families):
            get_backbone_entry(model_name)
        parsed = parse_values(name, values)
        if parsed:
            check_values(name, parsed)
        data_dir = default_data_dir()
        study = StudyConfig(protocol=protocol, seeds=int_list(seeds, "seed"),
                            target=target, source_root=Path(source_root) if source_root else None,
                            target_root=Path(target_root) if target_root else None,
                            target_min_positives=min_positives, target_classes=name_list(classes) if classes else (),
                            target_tranches=tuple(t.upper() for t in name_list(tranche)) if tranche else (),
                            fs=int(fs), backbone=backbone,
                            backbone_kwargs=backbone_kwargs, standalone_backbones=families, pretrain_task=pretrain_task,
                            pretrain_epochs=pretrain_epochs, epochs=epochs, batch_size=batch_size, lr=lr,
                            strategy=strategy, backbone_uri=backbone_uri, experiment=experiment,
                            runs_dir=data_dir / "runs", cache_dir=data_dir / "cache", device=device,
                            workers=os.cpu_count() or 1, jobs=jobs, calibrate_all=calibrate_all, cv=cv)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        sweep_id, results = run_sweep(name, study, parsed)
        click.echo(f"sweep run {sweep_id}: {len(results)} child runs ({sum(r.reused for r in results)} reused)")
        from ecgml.tracking.runs import produced_text

        click.echo(produced_text(sweep_id))
        if report_dir is not None:
            from ecgml.experiments.report import run_report

            click.echo(f"report: {run_report(experiment, report_dir, sweeps=[name])}")
    except (OSError, ValueError, KeyError, RegistryError, TrackingError) as exc:
        fail(exc)


@click.command("report")
@click.option("--experiment", default=STUDY_EXPERIMENT, show_default=True)
@click.option("--sweep", "sweeps", multiple=True, help="A sweep to report (repeat; default: every sweep found).")
@click.option("--parent-run-id", default=None, help="Only the runs under this sweep (or main) run.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
@click.option("--bootstrap", type=click.IntRange(10), default=1000, show_default=True, help="Bootstrap rounds.")
def report_command(experiment: str, sweeps: tuple[str, ...], parent_run_id: str | None, out_dir: Path,
                   bootstrap: int) -> None:
    """Read sweep runs from MLflow and write a Markdown report with plots; log it to a report run."""
    from ecgml.experiments.collect import CollectError
    from ecgml.experiments.report import run_report
    from ecgml.tracking.store import TrackingError, check_tracking_uri

    try:
        check_tracking_uri()
        path = run_report(experiment, out_dir, sweeps=list(sweeps) or None, parent_run_id=parent_run_id,
                          n_rounds=bootstrap)
    except (OSError, ValueError, CollectError, TrackingError) as exc:
        fail(exc)
    click.echo(f"report: {path.resolve()}")
    from ecgml.tracking.runs import experiment_runs_link
    from ecgml.tracking.store import tracking_client

    found = tracking_client().get_experiment_by_name(experiment)
    click.echo(f"runs:       {experiment_runs_link(found.experiment_id)}")


@click.command("compare-cv")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--bootstrap", type=click.IntRange(10), default=1000, show_default=True, help="Bootstrap rounds.")
@click.option("--out", "out_csv", type=click.Path(path_type=Path), default=None,
              help="Also write the table here (CSV: one row per fold, then the pooled row).")
def compare_cv_command(run_a: str, run_b: str, bootstrap: int, out_csv: Path | None) -> None:
    """Compare two cross-validations on the same folds fold by fold (RUN_A minus RUN_B: the parent runs that
    finetune and train-standalone --cv K printed as run: <id>): the paired bootstrap of macro AUC on each fold's
    records, and on all out-of-fold records pooled."""
    from ecgml.evaluate.paired import AlignmentError
    from ecgml.experiments.cv_compare import CvCompareError, compare_cv_runs
    from ecgml.tracking.store import TrackingError, check_tracking_uri

    try:
        check_tracking_uri()
        comparison = compare_cv_runs(run_a, run_b, n_rounds=bootstrap)
    except (OSError, CvCompareError, AlignmentError, TrackingError) as exc:
        fail(exc)
    click.echo(comparison.markdown())
    click.echo(comparison.summary())
    if out_csv is not None:
        from ecgml.io import atomic_write_text

        atomic_write_text(out_csv, comparison.table.to_csv(index=False))
        click.echo(f"table: {out_csv}")


COMMANDS: tuple[click.Command, ...] = (experiment_command, report_command, compare_cv_command)
