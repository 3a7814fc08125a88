"""``ecgml tune``: parses options into a :class:`~ecgml.tune.spec.TuneSpec` and
:class:`~ecgml.tune.study.RunSettings` and calls :func:`~ecgml.tune.study.run_study`.

    ecgml tune --n-trials 40 --workers 2                                   # journal file, this machine
    ecgml tune --storage postgresql://u:p@db/optuna --study-name s1 ...    # first machine: creates, finishes
    ecgml tune --storage postgresql://u:p@db/optuna --study-name s1 --join # other machines: work only
    ecgml tune --resume --study-name s1 --n-trials 60                      # continue (and grow) a study

The dataset and training options are :mod:`ecgml.cli.options`' (tune-only defaults where they differ).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from ecgml.cli.options import (
    Decorator,
    backbone_kwargs_option,
    cache_dir_option,
    crop_s_option,
    default_task,
    device_option,
    epochs_option,
    experiment_option,
    fail,
    fraction_option,
    fs_option,
    label_map_option,
    label_space_options,
    leads_option,
    name_list,
    num_workers_option,
    pairs,
    patience_option,
    root_option,
    runs_dir_option,
    splits_option,
    stack,
    target_option,
)
from ecgml.defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_BACKBONE_MODEL,
    DEFAULT_BACKBONE_URI,
    DEFAULT_SOURCE,
    PRETRAIN_KIND,
    TUNE_EXPERIMENT,
    classifier_model_name,
)
from ecgml.tune.space import PARAMETERS, STAGES
from ecgml.tune.spec import PRUNERS, SAMPLERS
from ecgml.tune.storage import DEFAULT_STORAGE


def _base_config(stage: str, seed: int, o: dict[str, Any]) -> Any:
    """The training config every trial starts from (the searched parameters are applied on top)."""
    from ecgml.config import DataConfig, PrepareConfig, default_data_dir
    from ecgml.train.loop import OptimConfig
    from ecgml.train.pipeline import ModelConfig, TrainConfig

    source = DEFAULT_SOURCE if stage == PRETRAIN_KIND else o["target"]
    try:
        root = Path(o["root"]) if o["root"] else default_data_dir() / "synthetic" / source
        task = o["task"] or ("all" if stage == PRETRAIN_KIND else default_task(source))
        own = {"min_positives": o["min_positives"], "classes": name_list(o["classes"]) if o["classes"] else (),
               "tranches": tuple(t.upper() for t in name_list(o["tranche"])) if o["tranche"] else (),
               "allow_overlap": o["allow_overlap"]} if stage != PRETRAIN_KIND else {}
        data = DataConfig(source=source, root=root, fs=int(o["fs"]), task=task, label_map=o["label_map"],
                          splits=o["splits"], **own)
        prepare = PrepareConfig(data=data, leads=o["leads"], cache_dir=o["cache_dir"] or default_data_dir() / "cache")
        return TrainConfig(
            kind=stage, data=prepare, model=ModelConfig(backbone=DEFAULT_BACKBONE, kwargs=o["backbone_kwargs"]),
            optim=OptimConfig(epochs=o["epochs"], patience=o["patience"]), crop_s=o["crop_s"],
            fraction=o["fraction"], seed=seed, device=o["device"], num_workers=o["num_workers"],
            experiment=o["experiment"], runs_dir=o["runs_dir"] or default_data_dir() / "runs",
            init_uri=o["backbone_uri"] if stage == "finetune" else None)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_SPACE_HELP = "Narrow the search space: NAME=LOW:HIGH[:log], NAME=A,B,C or NAME=VALUE (fixed); repeatable, or " + \
    "several in one separated by ';'. " + \
    "Parameters: " + ", ".join(f"{n} ({'/'.join(p.stages)})" for n, p in PARAMETERS.items()) + "."


def _study_options() -> Decorator:
    """The study's own options: its storage and name, the space, how trials are sampled, pruned, retried
    and registered."""
    return stack([
        click.option("--stage", type=click.Choice(STAGES), default="pretrain",
                     help="Tune pretraining on PTB-XL or fine-tuning a registered backbone on the target (--target)."),
        click.option("--n-trials", type=click.IntRange(1), default=None,
                     help="Trials in the study [new study: 20; --resume: the study's own, or a larger total]."),
        click.option("--workers", type=click.IntRange(1), default=1, help="Worker processes on this machine."),
        click.option("--storage", envvar="ECGML_OPTUNA_STORAGE", default=DEFAULT_STORAGE,
                     help="A journal file (one machine) or a SQLAlchemy URL, e.g. postgresql://user:pw@host/db "
                          "(several machines) [env: ECGML_OPTUNA_STORAGE]."),
        click.option("--study-name", default=None, help="[default: ecgml-STAGE-DATE-TIME; --resume: the newest study]"),
        click.option("--resume", is_flag=True, help="Continue an existing study (its stored space and config)."),
        click.option("--join", is_flag=True,
                     help="Only work on an existing study (another machine); no summary, no registration."),
        click.option("--space", "space_texts", multiple=True, metavar="NAME=SPEC", help=_SPACE_HELP),
        click.option("--pruner", type=click.Choice(PRUNERS), default="median",
                     help="Prune from per-epoch validation macro AUC."),
        click.option("--pruner-startup-trials", type=click.IntRange(0), default=3,
                     help="Median: trials before pruning."),
        click.option("--pruner-warmup-epochs", type=click.IntRange(0), default=1,
                     help="Median: epochs before pruning."),
        click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe"),
        click.option("--seed", type=int, default=0, help="Seed of the sampler and of every trial's training."),
        click.option("--tag", "tag_texts", multiple=True, metavar="KEY=VALUE",
                     help="Study tag, copied onto the parent run and every trial run; repeatable (or ';'-separated)."),
        click.option("--register-as", default=None,
                     help="Register the best trial's model under this name ('' = the default) [pretrain: "
                          f"{DEFAULT_BACKBONE_MODEL}, finetune: ecgml-<target>-classifier; --resume: the study's "
                          "own]."),
        click.option("--no-register", is_flag=True,
                     help="Do not register the best trial's model (kept by --resume)."),
        click.option("--heartbeat-interval", type=click.IntRange(1), default=30,
                     help="Seconds between trial heartbeats."),
        click.option("--grace-period", type=click.IntRange(2), default=None,
                     help="Seconds without a heartbeat before a trial is failed and retried [2 x interval]."),
        click.option("--max-retry", type=click.IntRange(-1), default=3,
                     help="Retries of a trial whose worker died (-1: no limit)."),
        click.option("--gpus", default=None,
                     help="Comma list of GPU ids, one per worker in turn (CUDA_VISIBLE_DEVICES)."),
        click.option("--worker-index", type=click.IntRange(0), default=None, hidden=True),
    ])


def _training_options() -> Decorator:
    """What every trial's training run starts from: :mod:`ecgml.cli.options`' factories, tune's defaults."""
    return stack([
        root_option(),
        fs_option(),
        target_option(),
        click.option("--task", default=None, help="[pretrain: all, finetune: shared18, or the target's own codes]"),
        *label_space_options(),
        label_map_option(),
        splits_option(),
        leads_option(),
        fraction_option(),
        epochs_option(10),
        patience_option(),
        backbone_kwargs_option("JSON arguments every trial's backbone gets."),
        click.option("--backbone-uri", default=DEFAULT_BACKBONE_URI, help="Finetune: the backbone."),
        crop_s_option("Finetune: the backbone's input length (pretrain tunes it)."),
        device_option(),
        num_workers_option(),
        experiment_option(TUNE_EXPERIMENT),
        cache_dir_option(),
        runs_dir_option(),
    ])


@click.command("tune", context_settings={"show_default": True})
@_study_options()
@_training_options()
def tune_command(stage: str, n_trials: int | None, workers: int, storage: str, study_name: str | None, resume: bool,
                 join: bool, space_texts: tuple[str, ...], pruner: str, pruner_startup_trials: int,
                 pruner_warmup_epochs: int, sampler: str, seed: int, tag_texts: tuple[str, ...],
                 register_as: str | None, no_register: bool, heartbeat_interval: int, grace_period: int | None,
                 max_retry: int, gpus: str | None, worker_index: int | None, **options: Any) -> None:
    """Optuna study over the training hyperparameters; each trial a nested MLflow run of the study's run.

    Trials prune from per-epoch validation macro AUC; the best trial's model is registered at the end.
    """
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.store import TrackingError
    from ecgml.tune.space import SpaceError
    from ecgml.tune.spec import StudyError
    from ecgml.tune.storage import StorageError
    from ecgml.tune.study import RunSettings, run_study, work
    from ecgml.tune.study import join as join_study

    _check_mode(resume, join, space_texts, study_name)
    settings = RunSettings(storage=storage, workers=workers, heartbeat_interval=heartbeat_interval,
                           grace_period=grace_period, max_retry=None if max_retry == -1 else max_retry,
                           gpus=tuple(g.strip() for g in gpus.split(",") if g.strip()) if gpus else (),
                           register=not no_register)
    try:
        if join:
            study, spec = join_study(str(study_name), settings)
            index = worker_index if worker_index is not None else os.getpid() % 100_000
            work(study, spec, settings, index, _echo)
            return
        spec = None
        if not resume:
            spec = _new_spec(stage, space_texts, n_trials, pruner, pruner_startup_trials, pruner_warmup_epochs,
                             sampler, seed, tag_texts, register_as, no_register, options)
            _echo("search space:\n" + spec.space.describe())
        result = run_study(spec, study_name, settings, resume_study=resume, n_trials=n_trials, echo=_echo,
                           register_as="" if no_register else register_as or None)
    except (SpaceError, StudyError, StorageError, TrackingError, RegistryError, OSError) as exc:
        fail(exc)
    _report(result)


def _check_mode(resume: bool, join: bool, space_texts: tuple[str, ...], study_name: str | None) -> None:
    """Refuse combinations of --resume, --join and --space that cannot mean anything, before any work."""
    if resume and join:
        raise click.UsageError("--resume and --join exclude each other")
    if (resume or join) and any(t.strip(" ;") for t in space_texts):
        raise click.UsageError("a study's search space is fixed when it is created; --space cannot change it")
    if join and not study_name:
        raise click.UsageError("--join needs --study-name")


def _new_spec(stage: str, space_texts: tuple[str, ...], n_trials: int | None, pruner: str, pruner_startup_trials: int,
              pruner_warmup_epochs: int, sampler: str, seed: int, tag_texts: tuple[str, ...],
              register_as: str | None, no_register: bool, options: dict[str, Any]) -> Any:
    """The :class:`~ecgml.tune.spec.TuneSpec` of a new study; it registers its best model under
    ``register_as`` (None or '': the stage's default name), or nowhere with ``no_register``."""
    from ecgml.tune.space import SearchSpace, parse_overrides
    from ecgml.tune.spec import TuneSpec

    space = SearchSpace.default(stage).narrowed(parse_overrides(space_texts))  # type: ignore[arg-type]
    default_name = DEFAULT_BACKBONE_MODEL if stage == PRETRAIN_KIND else classifier_model_name(options["target"])
    return TuneSpec(stage=stage, space=space, base=_base_config(stage, seed, options),  # type: ignore[arg-type]
                    n_trials=n_trials or 20, pruner=pruner, pruner_startup_trials=pruner_startup_trials,  # type: ignore[arg-type]
                    pruner_warmup_epochs=pruner_warmup_epochs, sampler=sampler, seed=seed,
                    tags=pairs(tag_texts, "--tag"),
                    register_as="" if no_register else register_as or default_name)


def _report(result: Any) -> None:
    """Print the study's outcome; trials left unfinished (every worker stopped) end the command with an error."""
    counts = ", ".join(f"{v} {k}" for k, v in result.counts.items())
    _echo(f"study {result.study_name}: {counts}; parent run {result.parent_run_id}")
    if result.best_number is not None:
        _echo(f"best trial {result.best_number}: val_macro_auc {result.best_value:.4f}, run {result.best_run_id}, "
              f"params {json.dumps(result.best_params, sort_keys=True)}")
    if result.registered:
        _echo(f"registered {result.registered}")
    from ecgml.tracking.runs import produced_text

    _echo(produced_text(result.parent_run_id, result.registered))
    if result.unfinished:
        raise click.ClickException(f"{result.unfinished} trials did not finish (every worker stopped); continue with "
                                   f"`ecgml tune --resume --study-name {result.study_name}`")


def _echo(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


COMMANDS: tuple[click.Command, ...] = (tune_command,)
