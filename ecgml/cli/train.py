"""``ecgml pretrain``, ``train-standalone`` and ``finetune``: one tracked training run each."""

from __future__ import annotations

from typing import Any

import click

from ecgml.cli.options import fail, prepare_config, train_options
from ecgml.config import DEFAULT_FINETUNE_STRATEGY, default_data_dir
from ecgml.defaults import (
    DEFAULT_BACKBONE_URI,
    DEFAULT_CLASSIFIER_MODEL,
    FINETUNE_EXPERIMENT,
    PRETRAIN_EXPERIMENT,
    STANDALONE_EXPERIMENT,
)


def train_config(kind: str, source: str, options: dict[str, Any]) -> Any:
    """The :class:`~ecgml.train.pipeline.TrainConfig` of :func:`train_options`' values (``backbone_kwargs``
    already a dict: :func:`~ecgml.cli.options.backbone_kwargs` parsed it)."""
    from ecgml.models import check_backbone_kwargs
    from ecgml.train.loop import OptimConfig
    from ecgml.train.pipeline import ModelConfig, TrainConfig

    aggregate, stride_s = windows_choice(options)
    try:
        check_backbone_kwargs(options["backbone"], options["backbone_kwargs"])
        from ecgml.tracking.registry import model_name_problem

        name_problem = options.get("register_as") and model_name_problem(options["register_as"])
        if name_problem:  # refused now, not after the whole run has trained
            raise ValueError(f"--register-as: {name_problem}")
        data = prepare_config(source, options["root"], options["fs"], options["task"], options["label_map"],
                              options["splits"], options["leads"], 10.0, None, options["cache_dir"], 1, False)
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
            init_uri=options.get("backbone_uri"), register_as=options.get("register_as") or "",
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

    try:
        outcome = run_training(config, resume=resume or bool(resume_run_id), resume_run_id=resume_run_id)
    except (OSError, ValueError, KeyError, TrackingError, CheckpointError, RegistryError) as exc:
        fail(exc)
    if outcome.run_id:
        from ecgml.tracking.runs import produced_text

        click.echo(f"run {outcome.run_id}: best epoch {outcome.best_epoch + 1}, validation macro AUC "
                   f"{outcome.val_macro_auc:.4f}, test macro AUC {outcome.test_macro_auc:.4f}; "
                   f"weights in {outcome.weights_dir}")
        click.echo(produced_text(outcome.run_id))


@click.command("pretrain")
@train_options("all", PRETRAIN_EXPERIMENT)
def pretrain_command(resume: bool, resume_run_id: str | None, **options: Any) -> None:
    """Train a backbone on PTB-XL (any task), tracked in MLflow."""
    _run_training(train_config("pretrain", "ptbxl", options), resume, resume_run_id)


@click.command("train-standalone")
@train_options("shared18", STANDALONE_EXPERIMENT)
def train_standalone_command(resume: bool, resume_run_id: str | None, **options: Any) -> None:
    """Train a model on G12EC from scratch on the 18 shared classes (the study's baseline)."""
    _run_training(train_config("standalone", "g12ec", options), resume, resume_run_id)


@click.command("finetune")
@train_options("shared18", FINETUNE_EXPERIMENT, DEFAULT_FINETUNE_STRATEGY)
@click.option("--backbone-uri", default=DEFAULT_BACKBONE_URI, show_default=True,
              help="Registered backbone: models:/NAME/VERSION or models:/NAME@ALIAS (production falls back to "
                   "the latest version, with a warning).")
@click.option("--register-as", default=DEFAULT_CLASSIFIER_MODEL, show_default=True,
              help="Register the fine-tuned classifier under this name ('' to skip).")
def finetune_command(resume: bool, resume_run_id: str | None, **options: Any) -> None:
    """Fine-tune a registered PTB-XL backbone on G12EC's 18 shared classes (new head, chosen strategy)."""
    _run_training(train_config("finetune", "g12ec", options), resume, resume_run_id)


COMMANDS: tuple[click.Command, ...] = (pretrain_command, train_standalone_command, finetune_command)
