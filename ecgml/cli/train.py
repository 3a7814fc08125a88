"""``ecgml pretrain``, ``train-standalone`` and ``finetune``: one tracked training run each."""

from __future__ import annotations

from typing import Any

import click

from ecgml.cli.options import cv_option, fail, label_space_options, prepare_config, stack, target_option, train_options
from ecgml.config import DEFAULT_FINETUNE_STRATEGY, default_data_dir
from ecgml.defaults import (
    DEFAULT_BACKBONE_URI,
    DEFAULT_SOURCE,
    FINETUNE_EXPERIMENT,
    FINETUNE_KIND,
    PRETRAIN_EXPERIMENT,
    PRETRAIN_KIND,
    STANDALONE_EXPERIMENT,
    STANDALONE_KIND,
    classifier_model_name,
)

#: ``--register-as`` for the name that follows the target (``ecgml-<target>-classifier``).
AUTO_NAME = "auto"


def target_training_options() -> Any:
    """What ``train-standalone`` and ``finetune`` add: the target, its label space, cross-validation."""
    return stack([
        target_option(),
        *label_space_options(),
        cv_option("K-fold cross-validation (own label space): one parent run, a child per fold, the pooled "
                  "out-of-fold test macro AUC on the parent [0: the stored train/val/test folds]."),
    ])


def train_config(kind: str, source: str, options: dict[str, Any]) -> Any:
    """The :class:`~ecgml.train.pipeline.TrainConfig` of :func:`train_options`' values (``backbone_kwargs``
    already a dict: :func:`~ecgml.cli.options.backbone_kwargs` parsed it)."""
    from ecgml.models import check_backbone_kwargs
    from ecgml.train.loop import OptimConfig
    from ecgml.train.pipeline import ModelConfig, TrainConfig

    aggregate, stride_s = windows_choice(options)
    try:
        check_backbone_kwargs(options["backbone"], options["backbone_kwargs"])
        cv = options.get("cv", 0)
        data = prepare_config(source=source, root=options["root"], fs=options["fs"], task=options["task"],
                              label_map=options["label_map"], splits=options["splits"], leads=options["leads"],
                              cache_dir=options["cache_dir"], min_positives=options.get("min_positives", 10),
                              classes=options.get("classes", ""), tranche=options.get("tranche", ""),
                              cv=cv, cv_fold=1 if cv else 0, allow_overlap=options.get("allow_overlap", False))
        register_as = options.get("register_as")
        if register_as == AUTO_NAME and kind == FINETUNE_KIND:
            register_as = classifier_model_name(source)
        from ecgml.tracking.registry import model_name_problem

        name_problem = register_as and model_name_problem(register_as)
        if name_problem:  # refused now, not after the whole run has trained
            raise ValueError(f"--register-as: {name_problem}")
        config = TrainConfig(
            kind=kind, data=data, model=ModelConfig(options["backbone"], options["backbone_kwargs"]),
            optim=OptimConfig(epochs=options["epochs"], batch_size=options["batch_size"], lr=options["lr"],
                              weight_decay=options["weight_decay"], patience=options["patience"],
                              aggregate=aggregate, strategy=options["strategy"],
                              layer_lr_fractions=tuple(options.get("layer_lr_fractions") or ())),
            crop_s=options["crop_s"], eval_stride_s=stride_s, fraction=options["fraction"],
            seed=options["seed"], device=options["device"], num_workers=options["num_workers"],
            device_data=options["device_data"], compile_model=options["compile_model"],
            experiment=options["experiment"], run_name=options["run_name"],
            runs_dir=options["runs_dir"] or default_data_dir() / "runs",
            init_uri=options.get("backbone_uri"), register_as=register_as or "",
        )
        from ecgml.train.pipeline import check_backbone_input

        check_backbone_input(config)
        return config
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def windows_choice(options: dict[str, Any]) -> tuple[str, float | None]:
    """``(aggregate, stride_s)`` of ``--windows`` (a named protocol) or of ``--aggregate``/``--stride-s``."""
    from ecgml.data.windows import WINDOW_PROTOCOLS

    name = options.get("windows")
    if not name:
        return options["aggregate"], options["stride_s"]
    ctx = click.get_current_context(silent=True)
    explicit = [f"--{p.replace('_', '-')}" for p in ("aggregate", "stride_s") if ctx is not None
                and ctx.get_parameter_source(p) not in (None, click.core.ParameterSource.DEFAULT)]
    if explicit:
        raise click.BadParameter(f"--windows {name} sets the aggregation and the stride: drop {', '.join(explicit)}")
    aggregate, fraction = WINDOW_PROTOCOLS[name]
    return aggregate, options["crop_s"] * fraction


def _run_training(config: Any, resume: bool, resume_run_id: str | None) -> None:
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.store import TrackingError
    from ecgml.train.checkpoint import CheckpointError
    from ecgml.train.runner import run_training

    errors = (OSError, ValueError, KeyError, TrackingError, CheckpointError, RegistryError)
    if config.data.data.cv:
        if resume or resume_run_id:
            fail(ValueError("--resume continues one run; a cross-validation (--cv) starts its folds afresh"))
        _run_cross_validation(config, errors)
        return
    try:
        outcome = run_training(config, resume=resume or bool(resume_run_id), resume_run_id=resume_run_id)
    except errors as exc:
        fail(exc)
    if outcome.run_id:
        from ecgml.tracking.runs import produced_text

        click.echo(f"run: {outcome.run_id}")
        click.echo(f"run {outcome.run_id}: best epoch {outcome.best_epoch + 1}, validation macro AUC "
                   f"{outcome.val_macro_auc:.4f}, test macro AUC {outcome.test_macro_auc:.4f}; "
                   f"weights in {outcome.weights_dir}")
        click.echo(produced_text(outcome.run_id))


def _run_cross_validation(config: Any, errors: tuple[type[BaseException], ...]) -> None:
    from ecgml.experiments.crossval import run_cross_validation

    try:
        outcome = run_cross_validation(config, say=click.echo)
    except errors as exc:
        fail(exc)
    from ecgml.tracking.runs import produced_text

    m = outcome.metrics
    click.echo(f"run {outcome.run_id}: {len(outcome.fold_run_ids)}-fold cross-validation, pooled out-of-fold test "
               f"macro AUC {m['test_macro_auc']:.4f} [{m['test_macro_auc_low']:.4f}, {m['test_macro_auc_high']:.4f}] "
               f"over {m['n_test']} records; out-of-fold predictions in oof_predictions.csv")
    click.echo(produced_text(outcome.run_id))


@click.command("pretrain")
@train_options("all", PRETRAIN_EXPERIMENT)
def pretrain_command(resume: bool, resume_run_id: str | None, **options: Any) -> None:
    """Train a backbone on PTB-XL (any task), tracked in MLflow."""
    _run_training(train_config(PRETRAIN_KIND, DEFAULT_SOURCE, options), resume, resume_run_id)


@click.command("train-standalone")
@train_options(None, STANDALONE_EXPERIMENT)
@target_training_options()
def train_standalone_command(resume: bool, resume_run_id: str | None, target: str, **options: Any) -> None:
    """Train a model on the target from scratch (the study's baseline): G12EC's 18 shared classes by default,
    a Challenge collection's own codes with --target cinc, your labelled folder's with --target folder."""
    _run_training(train_config(STANDALONE_KIND, target, options), resume, resume_run_id)


@click.command("finetune")
@train_options(None, FINETUNE_EXPERIMENT, DEFAULT_FINETUNE_STRATEGY)
@target_training_options()
@click.option("--backbone-uri", default=DEFAULT_BACKBONE_URI, show_default=True,
              help="Registered backbone: models:/NAME/VERSION or models:/NAME@ALIAS (production falls back to "
                   "the latest version, with a warning).")
@click.option("--register-as", default=AUTO_NAME, show_default=True,
              help=f"Register the fine-tuned classifier under this name ('' to skip; {AUTO_NAME}: "
                   "ecgml-<target>-classifier). A cross-validation (--cv) registers nothing.")
def finetune_command(resume: bool, resume_run_id: str | None, target: str, **options: Any) -> None:
    """Fine-tune a registered PTB-XL backbone on the target (new head, chosen strategy): G12EC's 18 shared
    classes by default, a Challenge collection's own codes with --target cinc, your labelled folder's with
    --target folder."""
    _run_training(train_config(FINETUNE_KIND, target, options), resume, resume_run_id)


COMMANDS: tuple[click.Command, ...] = (pretrain_command, train_standalone_command, finetune_command)
