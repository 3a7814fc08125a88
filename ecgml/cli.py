"""The ``ecgml`` command line: a thin click layer that parses options into a config and calls the library.

MLproject entry points call these same commands.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from ecgml.config import (
    DEFAULT_FINETUNE_STRATEGY,
    SOURCES,
    STRATEGIES,
    DataConfig,
    PrepareConfig,
    default_data_dir,
    to_jsonable,
)
from ecgml.data.download import SOURCES as DOWNLOAD_SOURCES
from ecgml.data.labels import DEFAULT_LABEL_MAP, LABEL_MAPS, PTBXL_TASKS

_FS_CHOICES = click.Choice(["500", "250", "100", "50"])
#: Small enough to train on 2 CPU cores in minutes; the published xresnet1d101 is one option away.
DEFAULT_BACKBONE = "xresnet1d50_small"


def _fail(exc: Exception) -> None:
    """Bad input ends with one clear line, not a traceback."""
    raise click.ClickException(str(exc)) from exc


@click.group()
@click.version_option(package_name="ecgml")
def main() -> None:
    """ecgml: transfer learning on 12-lead ECGs (PTB-XL -> G12EC), tracked in MLflow."""
    _quiet_known_library_noise()


def _quiet_known_library_noise() -> None:
    """MLflow warnings that say nothing about the user's job (checked for each: benign here)."""
    import logging
    import warnings

    for message in ("The specified dataset source can be interpreted in multiple ways",  # our CSV index inputs
                    "Hint: Inferred schema contains integer column",  # dataset inputs, not model schemas
                    ".*Add type hints to the `predict` method",  # the pyfunc validates its own input
                    ".*Type hint used in the model's predict function"):
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


@main.group()
def data() -> None:
    """Datasets: synthesise, download, prepare (cache) and describe."""


def _parse_rates(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of rates") from None
    if not rates or not set(rates) <= {100, 500}:
        raise click.BadParameter("PTB-XL-shaped trees are written at 100 and/or 500 Hz")
    return rates


@data.command("synth")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder to write ptbxl/ and g12ec/ into [default: $ECGML_DATA/synthetic].")
@click.option("--ptbxl-records", type=click.IntRange(0), default=2000, show_default=True)
@click.option("--g12ec-records", type=click.IntRange(0), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ptbxl-rates", default="100,500", show_default=True,
              help="Sampling rates of the PTB-XL-shaped tree (records100/, records500/).")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="Worker processes (0 = all cores).")
def synth_command(out_dir: Path | None, ptbxl_records: int, g12ec_records: int, seed: int,
                  ptbxl_rates: str, workers: int) -> None:
    """Write synthetic PTB-XL-shaped and G12EC-shaped trees in the real on-disk formats."""
    from ecgml.data.synth import generate_g12ec, generate_ptbxl

    out_dir = out_dir or default_data_dir() / "synthetic"
    rates = _parse_rates(ptbxl_rates)
    try:
        summaries: dict[str, Any] = {}
        if ptbxl_records:
            summaries["ptbxl"] = generate_ptbxl(out_dir / "ptbxl", ptbxl_records, seed,
                                                sampling_rates=rates, workers=workers)
        if g12ec_records:
            summaries["g12ec"] = generate_g12ec(out_dir / "g12ec", g12ec_records, seed + 1, workers=workers)
    except (OSError, ValueError) as exc:
        _fail(exc)
    for name, summary in summaries.items():
        click.echo(f"{name}: {summary}")
    _log_to_mlflow_run({"synth_config.json": {"out": str(out_dir), "ptbxl_records": ptbxl_records,
                                              "g12ec_records": g12ec_records, "seed": seed,
                                              "ptbxl_rates": list(rates)}})


@data.command("download")
@click.argument("name", type=click.Choice(sorted(DOWNLOAD_SOURCES)))
@click.option("--dest", type=click.Path(path_type=Path), required=True, help="Folder to download into.")
@click.option("--base-url", default=None, help="A mirror to download from instead of the publisher.")
@click.option("--no-verify", is_flag=True, help="Skip SHA-256 verification (not recommended).")
def download_command(name: str, dest: Path, base_url: str | None, no_verify: bool) -> None:
    """Download a published dataset, resuming partial files and verifying published checksums.

    ptbxl: PTB-XL 1.0.3, every file checked against its SHA256SUMS.txt. g12ec: the 2020 Challenge's
    Georgia archive, checked against its published MD5. g12ec-physionet: the same records from
    PhysioNet's versioned release, every file checked by SHA-256. g12ec-2021: the 2021 re-issue (no
    published checksum: the receipt records the SHA-256 of what arrived).
    """
    from ecgml.data.download import download_dataset

    try:
        root = download_dataset(name, dest, base_url=base_url, verify=not no_verify)
    except (OSError, ValueError) as exc:
        _fail(exc)
    click.echo(f"{name} ready at {root}")


def _data_options(fn: Any) -> Any:
    options = [
        click.option("--source", type=click.Choice(SOURCES), required=True),
        click.option("--root", default=None,
                     help="Dataset root [default: the synthetic tree of that source]."),
        click.option("--fs", type=_FS_CHOICES, default="100", show_default=True,
                     help="Sampling rate of the cache (resampled from the files)."),
        click.option("--task", type=click.Choice(PTBXL_TASKS), default="shared18", show_default=True),
        click.option("--label-map", type=click.Choice(LABEL_MAPS), default=DEFAULT_LABEL_MAP,
                     show_default=True),
        click.option("--splits", default="1-8/9/10", show_default=True, help="train/val/test folds."),
        click.option("--leads", default="12", show_default=True,
                     help="12, 6, 3, 2, 1 or a comma list of lead names."),
        click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=10.0,
                     show_default=True, help="Cached length per record (cropped or zero-padded)."),
        click.option("--bandpass", default=None, help="LOW,HIGH in Hz (e.g. 0.5,40); off by default."),
        click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                     help="[default: $ECGML_DATA/cache]"),
        click.option("--workers", type=click.IntRange(1), default=1, show_default=True),
        click.option("--allow-foreign", is_flag=True,
                     help="G12EC: accept records of other Challenge databases (never for fine-tuning)."),
        click.option("--rebuild-folds", is_flag=True,
                     help="G12EC: build the stored folds again (after the tree changed)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _prepare_config(source: str, root: str | Path | None, fs: str, task: str, label_map: str, splits: str,
                    leads: str, seconds: float, bandpass: str | None, cache_dir: Path | None,
                    workers: int, allow_foreign: bool, rebuild_folds: bool = False) -> PrepareConfig:
    low = high = None
    if bandpass:
        try:
            low, high = (float(x) for x in bandpass.split(","))
        except ValueError:
            raise click.BadParameter(f"--bandpass {bandpass!r} must be LOW,HIGH in Hz") from None
    try:
        data_root = Path(root) if root else default_data_dir() / "synthetic" / source
        data_config = DataConfig(source=source, root=data_root,
                                 fs=int(fs), task=task, label_map=label_map, splits=splits,
                                 allow_foreign=allow_foreign, rebuild_folds=rebuild_folds)
        return PrepareConfig(data=data_config, leads=leads, seconds=seconds, bandpass_low=low,
                             bandpass_high=high, cache_dir=cache_dir or default_data_dir() / "cache",
                             workers=workers)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@data.command("prepare")
@_data_options
def prepare_command(**options: Any) -> None:
    """Read a dataset and build (or reuse) its signal cache and label matrix."""
    from ecgml.data.prepare import prepare

    config = _prepare_config(**options)
    try:
        prepared = prepare(config)
    except (OSError, ValueError, KeyError) as exc:
        _fail(exc)
    click.echo(f"cache ready: {prepared.cache.path} ({len(prepared.cache.records)} records, "
               f"shape {tuple(prepared.cache.signals.shape)})")
    _log_to_mlflow_run({"config.json": to_jsonable(config)})


@data.command("stats")
@_data_options
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the statistics as JSON here.")
def stats_command(json_path: Path | None, **options: Any) -> None:
    """Label counts per split and per label map, dropped records and why, NaN and flat leads."""
    from ecgml.data.prepare import prepare
    from ecgml.data.stats import dataset_stats, format_stats
    from ecgml.io import atomic_write_json

    config = _prepare_config(**options)
    try:
        stats = dataset_stats(prepare(config))
    except (OSError, ValueError, KeyError) as exc:
        _fail(exc)
    click.echo(format_stats(stats))
    if json_path:
        atomic_write_json(json_path, stats)
    _log_to_mlflow_run({"config.json": to_jsonable(config), f"stats_{config.data.source}.json": stats})


def _train_options(source: str, task: str, experiment: str, strategy: str = "full") -> Any:
    """Options shared by ``pretrain`` and ``train-standalone`` (one source of defaults for both)."""
    def decorate(fn: Any) -> Any:
        options = [
            click.option("--root", default=None, help="Dataset root [default: the synthetic tree]."),
            click.option("--fs", type=_FS_CHOICES, default="100", show_default=True),
            click.option("--task", type=click.Choice(PTBXL_TASKS), default=task, show_default=True),
            click.option("--label-map", type=click.Choice(LABEL_MAPS), default=DEFAULT_LABEL_MAP, show_default=True),
            click.option("--splits", default="1-8/9/10", show_default=True),
            click.option("--leads", default="12", show_default=True),
            click.option("--fraction", type=float, default=1.0, show_default=True,
                         help="Label-stratified fraction of the training folds."),
            click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
                         help="A registered backbone (see `ecgml models`)."),
            click.option("--backbone-kwargs", default="{}", show_default=True,
                         help='JSON arguments of the backbone, e.g. \'{"width": 0.5}\'.'),
            click.option("--epochs", type=click.IntRange(1), default=20, show_default=True),
            click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True),
            click.option("--lr", type=float, default=1e-2, show_default=True),
            click.option("--weight-decay", type=float, default=1e-2, show_default=True),
            click.option("--patience", type=click.IntRange(0), default=5, show_default=True),
            click.option("--crop-s", type=float, default=2.5, show_default=True),
            click.option("--stride-s", type=float, default=None, help="Evaluation window stride [crop/2]."),
            click.option("--aggregate", type=click.Choice(["max", "mean"]), default="max", show_default=True),
            click.option("--strategy", type=click.Choice(STRATEGIES), default=strategy, show_default=True,
                         help="What trains: everything, the head only, or stage by stage (fine-tuning)."),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
            click.option("--num-workers", type=click.IntRange(0), default=0, show_default=True),
            click.option("--experiment", default=experiment, show_default=True),
            click.option("--run-name", default=None),
            click.option("--cache-dir", type=click.Path(path_type=Path), default=None),
            click.option("--runs-dir", type=click.Path(path_type=Path), default=None),
            click.option("--resume", is_flag=True, help="Continue the newest unfinished run of this configuration."),
            click.option("--resume-run-id", default=None, help="Continue this MLflow run from its checkpoint."),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def _train_config(kind: str, source: str, options: dict[str, Any]) -> Any:
    from ecgml.train.loop import OptimConfig
    from ecgml.train.pipeline import ModelConfig, TrainConfig

    try:
        backbone_kwargs = json.loads(options["backbone_kwargs"])
        if not isinstance(backbone_kwargs, dict):
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"--backbone-kwargs {options['backbone_kwargs']!r} is not a JSON object") from None
    from ecgml.models import get_backbone_entry

    try:
        get_backbone_entry(options["backbone"])
        data = _prepare_config(source, options["root"], options["fs"], options["task"], options["label_map"],
                               options["splits"], options["leads"], 10.0, None, options["cache_dir"], 1, False)
        return TrainConfig(
            kind=kind, data=data, model=ModelConfig(options["backbone"], backbone_kwargs),
            optim=OptimConfig(epochs=options["epochs"], batch_size=options["batch_size"], lr=options["lr"],
                              weight_decay=options["weight_decay"], patience=options["patience"],
                              aggregate=options["aggregate"], strategy=options["strategy"]),
            crop_s=options["crop_s"], eval_stride_s=options["stride_s"], fraction=options["fraction"],
            seed=options["seed"], device=options["device"], num_workers=options["num_workers"],
            experiment=options["experiment"], run_name=options["run_name"],
            runs_dir=options["runs_dir"] or default_data_dir() / "runs",
            init_uri=options.get("backbone_uri"), register_as=options.get("register_as") or "",
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _run_training(config: Any, resume: bool, resume_run_id: str | None) -> None:
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.runs import TrackingError
    from ecgml.train.checkpoint import CheckpointError
    from ecgml.train.runner import run_training

    try:
        outcome = run_training(config, resume=resume or bool(resume_run_id), resume_run_id=resume_run_id)
    except (OSError, ValueError, KeyError, TrackingError, CheckpointError, RegistryError) as exc:
        _fail(exc)
    if outcome.run_id:
        click.echo(f"run {outcome.run_id}: best epoch {outcome.best_epoch + 1}, validation macro AUC "
                   f"{outcome.val_macro_auc:.4f}, test macro AUC {outcome.test_macro_auc:.4f}; "
                   f"weights in {outcome.weights_dir}")


@main.command("pretrain")
@_train_options("ptbxl", "all", "ecgml-pretrain")
def pretrain_command(resume: bool, resume_run_id: str | None, **options: Any) -> None:
    """Train a backbone on PTB-XL (any task), tracked in MLflow."""
    _run_training(_train_config("pretrain", "ptbxl", options), resume, resume_run_id)


@main.command("train-standalone")
@_train_options("g12ec", "shared18", "ecgml-standalone")
def train_standalone_command(resume: bool, resume_run_id: str | None, **options: Any) -> None:
    """Train a model on G12EC from scratch on the 18 shared classes (the study's baseline)."""
    _run_training(_train_config("standalone", "g12ec", options), resume, resume_run_id)


@main.command("finetune")
@_train_options("g12ec", "shared18", "ecgml-finetune", DEFAULT_FINETUNE_STRATEGY)
@click.option("--backbone-uri", default="models:/ecgml-ptbxl-backbone@production", show_default=True,
              help="Registered backbone: models:/NAME/VERSION or models:/NAME@ALIAS (production falls back to "
                   "the latest version, with a warning).")
@click.option("--register-as", default="ecgml-g12ec-classifier", show_default=True,
              help="Register the fine-tuned classifier under this name ('' to skip).")
def finetune_command(resume: bool, resume_run_id: str | None, **options: Any) -> None:
    """Fine-tune a registered PTB-XL backbone on G12EC's 18 shared classes (new head, chosen strategy)."""
    _run_training(_train_config("finetune", "g12ec", options), resume, resume_run_id)


@main.command("calibrate")
@click.option("--model", "model_uri", default="models:/ecgml-g12ec-classifier@production", show_default=True,
              help="models:/NAME/VERSION, models:/NAME@ALIAS (production falls back to the latest version) "
                   "or runs:/RUN_ID (measured only, not registered).")
@click.option("--method", type=click.Choice(["single", "per-class"]), default="single", show_default=True,
              help="Which fitted temperatures the registered version applies (both are reported).")
@click.option("--register-as", default=None, help="Registered model name [default: the source model's name].")
@click.option("--bins", type=click.IntRange(2), default=10, show_default=True, help="Reliability bins.")
@click.option("--experiment", default="ecgml-calibrate", show_default=True)
@click.option("--runs-dir", type=click.Path(path_type=Path), default=None)
def calibrate_command(model_uri: str, method: str, register_as: str | None, bins: int, experiment: str,
                      runs_dir: Path | None) -> None:
    """Temperature-scale a classifier on its validation predictions; report test ECE/MCE/Brier before and
    after; register the calibrated version (its pyfunc applies the temperatures)."""
    from ecgml.jobs.calibrate import CalibrationError, run_calibration
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.runs import TrackingError

    try:
        outcome = run_calibration(model_uri, method=method, register_as=register_as, experiment=experiment,
                                  runs_dir=runs_dir or default_data_dir() / "runs", n_bins=bins)
    except (OSError, CalibrationError, RegistryError, TrackingError) as exc:
        _fail(exc)
    m = outcome.calibration.metrics()
    click.echo(f"run {outcome.run_id}: temperature {m['temperature_single']:.3f}; test macro ECE "
               f"{m['test_macro_ece_before']:.4f} -> {m['test_macro_ece_after']:.4f}, Brier "
               f"{m['test_macro_brier_before']:.4f} -> {m['test_macro_brier_after']:.4f} ({method})"
               + (f"; registered {outcome.registered}" if outcome.registered else ""))


@main.command("evaluate")
@click.option("--model", "model_uri", default="models:/ecgml-g12ec-classifier@production", show_default=True,
              help="models:/NAME/VERSION or models:/NAME@ALIAS, loaded exactly as it is served.")
@click.option("--source", type=click.Choice(SOURCES), default="g12ec", show_default=True)
@click.option("--root", default=None, help="Dataset root [default: the synthetic tree of that source].")
@click.option("--label-map", type=click.Choice(LABEL_MAPS), default=DEFAULT_LABEL_MAP, show_default=True)
@click.option("--splits", default="1-8/9/10", show_default=True, help="train/val/test folds.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--bootstrap", type=click.IntRange(10), default=1000, show_default=True, help="Bootstrap rounds.")
@click.option("--experiment", default="ecgml-evaluate", show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
@click.option("--runs-dir", type=click.Path(path_type=Path), default=None)
def evaluate_command(model_uri: str, source: str, root: str | None, label_map: str, splits: str, split: str,
                     bootstrap: int, experiment: str, cache_dir: Path | None, runs_dir: Path | None) -> None:
    """Score a registered model, as served (calibration included), on a dataset split; log metrics and plots."""
    from ecgml.jobs.evaluate import EvaluationError, run_evaluation
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.runs import TrackingError

    config = _prepare_config(source, root, "100", "shared18", label_map, splits, "12", 10.0, None, cache_dir,
                             os.cpu_count() or 1, False)
    try:
        outcome = run_evaluation(model_uri, config, split=split, experiment=experiment, bootstrap_rounds=bootstrap,
                                 runs_dir=runs_dir or default_data_dir() / "runs")
    except (OSError, ValueError, KeyError, EvaluationError, RegistryError, TrackingError) as exc:
        _fail(exc)
    m = outcome.metrics
    click.echo(f"run {outcome.run_id}: {split} macro AUC {m[f'{split}_macro_auc']:.4f} "
               f"[{m[f'{split}_macro_auc_low']:.4f}, {m[f'{split}_macro_auc_high']:.4f}], AUPRC "
               f"{m[f'{split}_macro_auprc']:.4f}, ECE {m[f'{split}_macro_ece']:.4f}; predictions {outcome.predictions}")


@main.command("models")
def models_command() -> None:
    """List the registered backbones."""
    from ecgml.models import list_backbones

    for name in list_backbones():
        click.echo(name)


@main.command("register")
@click.option("--experiment", default="ecgml-pretrain", show_default=True, help="Where to look for pretraining runs.")
@click.option("--name", default="ecgml-ptbxl-backbone", show_default=True, help="Registered model name.")
@click.option("--metric", default="best_val_macro_auc", show_default=True, help="Higher is better.")
def register_command(experiment: str, name: str, metric: str) -> None:
    """Register the best finished pretraining run's model as a new version."""
    from ecgml.tracking.registry import RegistryError, register_best

    try:
        info = register_best(experiment, name, metric)
    except RegistryError as exc:
        _fail(exc)
    click.echo(f"registered {info.name} version {info.version} from run {info.run_id} "
               f"({metric} {info.tags.get('metric.' + metric, '?')})")


@main.group()
def registry() -> None:
    """Promote registered versions through stages (as aliases) and inspect them."""


def _describe(info: Any) -> str:
    metrics = ", ".join(f"{k.removeprefix('metric.')}={v}" for k, v in sorted(info.tags.items())
                        if k.startswith("metric."))
    history = json.loads(info.tags.get("ecgml.promotion_history", "[]"))
    last = history[-1] if history else None
    lines = [f"{info.name} v{info.version}  aliases: {', '.join(info.aliases) or '-'}  run: {info.run_id}",
             f"  metrics: {metrics or '-'}",
             f"  lineage: {info.tags.get('dataset', '?')} {info.tags.get('task', '')} "
             f"cache {info.tags.get('cache_digest', '?')[:12]} backbone {info.tags.get('backbone', '?')}"
             + (f" from {info.tags['ecgml.backbone_version']}" if "ecgml.backbone_version" in info.tags else "")]
    if last:
        lines.append(f"  last promotion: {last['to']} by {last['by']} at {last['at']} ({len(history)} in all)")
    return "\n".join(lines)


@registry.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--stage", type=click.Choice(["staging", "production", "archived"]), default=None)
@click.option("--alias", default=None, help="Any other alias, e.g. champion.")
def promote_command(name: str, version: str, stage: str | None, alias: str | None) -> None:
    """Move VERSION of NAME to a stage, or give it an alias; the history is kept as a tag."""
    from ecgml.tracking.registry import RegistryError, promote

    try:
        click.echo(_describe(promote(name, version, stage=stage, alias=alias)))
    except RegistryError as exc:
        _fail(exc)


@registry.command("list")
@click.argument("name")
def list_command(name: str) -> None:
    """Every version of NAME with aliases, metrics and lineage."""
    from ecgml.tracking.registry import RegistryError, list_versions

    try:
        for info in list_versions(name):
            click.echo(_describe(info))
    except RegistryError as exc:
        _fail(exc)


@registry.command("show")
@click.argument("uri")
def show_command(uri: str) -> None:
    """One version: models:/NAME/VERSION or models:/NAME@ALIAS."""
    from ecgml.tracking.registry import RegistryError, resolve

    try:
        info = resolve(uri)
    except RegistryError as exc:
        _fail(exc)
    click.echo(_describe(info))
    click.echo(json.dumps(info.tags, indent=2, sort_keys=True))


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{what} {text!r} is not a comma-separated list of integers") from None
    if not values:
        raise click.BadParameter(f"give at least one {what}")
    return values


def _float_list(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{what} {text!r} is not a comma-separated list of numbers") from None


@main.command("main")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Data folder [default: $ECGML_DATA or ./data].")
@click.option("--ptbxl-records", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--g12ec-records", type=click.IntRange(1), default=4000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic data.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="0 = all cores.")
@click.option("--fractions", default="0.25,0.025", show_default=True,
              help="G12EC training fractions compared (of 4,000 records: 800 and 80 training records).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Training seeds of every comparison.")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True)
@click.option("--standalone", default="xresnet1d50_small,resnet1d_wang_small,inception1d_small", show_default=True,
              help="Standalone baseline backbones (one per family).")
@click.option("--epochs", type=click.IntRange(1), default=15, show_default=True)
@click.option("--pretrain-epochs", type=click.IntRange(1), default=15, show_default=True)
@click.option("--report-dir", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
@click.option("--experiment", default="ecgml-study", show_default=True)
@click.option("--device", default="auto", show_default=True)
def main_command(out_dir: Path | None, ptbxl_records: int, g12ec_records: int, seed: int, workers: int,
                 fractions: str, seeds: str, backbone: str, standalone: str, epochs: int, pretrain_epochs: int,
                 report_dir: Path, experiment: str, device: str) -> None:
    """The embedded default job: a compact study on synthetic data (data, pretrain, register, promote,
    fine-tune, calibrate, evaluate, fine-tuned vs standalone sweep, report), each step a child run."""
    from ecgml.jobs.main import MainConfig, run_main
    from ecgml.models import get_backbone_entry
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.runs import TrackingError

    try:
        families = tuple(x.strip() for x in standalone.split(",") if x.strip())
        for name in (backbone, *families):
            get_backbone_entry(name)
        config = MainConfig(data_dir=out_dir or default_data_dir(), ptbxl_records=ptbxl_records,
                            g12ec_records=g12ec_records, data_seed=seed, workers=workers,
                            fractions=_float_list(fractions, "--fractions"), seeds=_int_list(seeds, "seed"),
                            backbone=backbone, standalone_backbones=families, epochs=epochs,
                            pretrain_epochs=pretrain_epochs, experiment=experiment, report_dir=report_dir,
                            device=device)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        run_main(config)
    except (OSError, ValueError, KeyError, RegistryError, TrackingError) as exc:
        _fail(exc)


@main.command("experiment")
@click.argument("name", type=click.Choice(["fraction", "pretrain-fraction", "sampling-rate", "calibration",
                                           "input-domain", "leads", "strategy"]))
@click.option("--values", default=None, help="The swept values, comma-separated [default: the study's list].")
@click.option("--protocol", type=click.Choice(["standard", "seed"]), default="standard", show_default=True,
              help="standard: PTB-XL folds 1-8/9/10, random crops, separate G12EC val/test; seed: the original's "
                   "choices (PTB-XL test fold 5, G12EC fold 10 for val and test, centre crops, gradual unfreezing).")
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--ptbxl-root", default=None, help="PTB-XL root [default: the synthetic tree].")
@click.option("--g12ec-root", default=None, help="G12EC root [default: the synthetic tree].")
@click.option("--fs", type=_FS_CHOICES, default="100", show_default=True)
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True, help="Pretrained and fine-tuned backbone.")
@click.option("--backbone-kwargs", default="{}", show_default=True)
@click.option("--standalone", default="xresnet1d50_small,resnet1d_wang_small,inception1d_small", show_default=True)
@click.option("--backbone-uri", default=None,
              help="Fine-tune this registered backbone where the sweep does not vary pretraining.")
@click.option("--pretrain-task", type=click.Choice(PTBXL_TASKS), default="all", show_default=True)
@click.option("--pretrain-epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", type=float, default=1e-2, show_default=True)
@click.option("--strategy", type=click.Choice(STRATEGIES), default=DEFAULT_FINETUNE_STRATEGY, show_default=True,
              help="Fine-tuning strategy where the sweep does not vary it.")
@click.option("--calibrate-all", is_flag=True, help="Also calibrate every fine-tuned and standalone run.")
@click.option("--experiment", default="ecgml-study", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--report-dir", type=click.Path(path_type=Path), default=None,
              help="Also write the report of this sweep here.")
def experiment_command(name: str, values: str | None, protocol: str, seeds: str, ptbxl_root: str | None,
                       g12ec_root: str | None, fs: str, backbone: str, backbone_kwargs: str, standalone: str,
                       backbone_uri: str | None, pretrain_task: str, pretrain_epochs: int, epochs: int,
                       batch_size: int, lr: float, strategy: str, calibrate_all: bool, experiment: str, device: str,
                       report_dir: Path | None) -> None:
    """Run one sweep of the study: a parent run with a child run per setting, arm and seed."""
    from ecgml.experiments.study import StudyConfig, check_values, parse_values, run_sweep
    from ecgml.models import get_backbone_entry
    from ecgml.tracking.registry import RegistryError
    from ecgml.tracking.runs import TrackingError

    try:
        kwargs = json.loads(backbone_kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError(f"--backbone-kwargs {backbone_kwargs!r} is not a JSON object")
        families = tuple(x.strip() for x in standalone.split(",") if x.strip())
        for model_name in (backbone, *families):
            get_backbone_entry(model_name)
        parsed = parse_values(name, values)
        if parsed:
            check_values(name, parsed)
        data_dir = default_data_dir()
        study = StudyConfig(protocol=protocol, seeds=_int_list(seeds, "seed"),
                            ptbxl_root=Path(ptbxl_root) if ptbxl_root else None,
                            g12ec_root=Path(g12ec_root) if g12ec_root else None, fs=int(fs), backbone=backbone,
                            backbone_kwargs=kwargs, standalone_backbones=families, pretrain_task=pretrain_task,
                            pretrain_epochs=pretrain_epochs, epochs=epochs, batch_size=batch_size, lr=lr,
                            strategy=strategy, backbone_uri=backbone_uri, experiment=experiment,
                            runs_dir=data_dir / "runs", cache_dir=data_dir / "cache", device=device,
                            workers=os.cpu_count() or 1, calibrate_all=calibrate_all)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        sweep_id, results = run_sweep(name, study, parsed)
        click.echo(f"sweep run {sweep_id}: {len(results)} child runs ({sum(r.reused for r in results)} reused)")
        if report_dir is not None:
            from ecgml.experiments.report import run_report

            click.echo(f"report: {run_report(experiment, report_dir, sweeps=[name])}")
    except (OSError, ValueError, KeyError, RegistryError, TrackingError) as exc:
        _fail(exc)


@main.command("report")
@click.option("--experiment", default="ecgml-study", show_default=True)
@click.option("--sweep", "sweeps", multiple=True, help="A sweep to report (repeat; default: every sweep found).")
@click.option("--parent-run-id", default=None, help="Only the runs under this sweep (or main) run.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
@click.option("--bootstrap", type=click.IntRange(10), default=1000, show_default=True, help="Bootstrap rounds.")
def report_command(experiment: str, sweeps: tuple[str, ...], parent_run_id: str | None, out_dir: Path,
                   bootstrap: int) -> None:
    """Read sweep runs from MLflow and write a Markdown report with plots; log it to a report run."""
    from ecgml.experiments.collect import CollectError
    from ecgml.experiments.report import run_report
    from ecgml.tracking.runs import TrackingError, check_tracking_uri

    try:
        check_tracking_uri()
        path = run_report(experiment, out_dir, sweeps=list(sweeps) or None, parent_run_id=parent_run_id,
                          n_rounds=bootstrap)
    except (OSError, ValueError, CollectError, TrackingError) as exc:
        _fail(exc)
    click.echo(f"report: {path.resolve()}")


def _log_to_mlflow_run(artifacts: dict[str, Any]) -> None:
    """When run by ``mlflow run`` (``MLFLOW_RUN_ID`` set), attach these JSON documents to that run."""
    if not os.environ.get("MLFLOW_RUN_ID"):
        return
    from ecgml.tracking.runs import log_json, open_run

    with open_run("ecgml", system_metrics=False):
        for name, obj in artifacts.items():
            log_json(obj, name)


def _register_subcommands() -> None:
    """Commands that live beside their library (they import nothing heavy until run)."""
    from ecgml.tune.cli import tune_command

    main.add_command(tune_command, "tune")


_register_subcommands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
