"""Options and parsers shared by the command modules, so each option has one name, type and default.

Single options are factories (``fs_option()``); :func:`data_options` and :func:`train_options` stack the
options of a dataset and of a training run. ``ecgml tune`` reuses the same factories with its own defaults.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from ecgml.config import SOURCES, STRATEGIES, DataConfig, PrepareConfig, default_data_dir
from ecgml.data.labels import DEFAULT_LABEL_MAP, LABEL_MAPS, PTBXL_TASKS
from ecgml.defaults import CACHE_RATES, DEFAULT_BACKBONE, DEFAULT_FS, DEFAULT_SPLITS, DEVICE_DATA

Decorator = Callable[[Any], Any]

#: ``--fs`` values: the rates a cache can be built at.
FS_CHOICES = click.Choice([str(rate) for rate in CACHE_RATES])


def fail(exc: Exception) -> NoReturn:
    """Bad input ends with one clear line, not a traceback."""
    raise click.ClickException(str(exc)) from exc


def stack(options: list[Decorator]) -> Decorator:
    """One decorator applying ``options`` so they list in ``--help`` in the order given."""
    def decorate(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def root_option(help: str = "Dataset root [default: the synthetic tree].") -> Decorator:
    return click.option("--root", default=None, help=help)


def fs_option(help: str | None = None) -> Decorator:
    return click.option("--fs", type=FS_CHOICES, default=str(DEFAULT_FS), show_default=True, help=help)


def task_option(default: str) -> Decorator:
    return click.option("--task", type=click.Choice(PTBXL_TASKS), default=default, show_default=True)


def label_map_option() -> Decorator:
    return click.option("--label-map", type=click.Choice(LABEL_MAPS), default=DEFAULT_LABEL_MAP, show_default=True)


def splits_option(help: str | None = None) -> Decorator:
    return click.option("--splits", default=DEFAULT_SPLITS, show_default=True, help=help)


def leads_option(help: str | None = None) -> Decorator:
    return click.option("--leads", default="12", show_default=True, help=help)


def fraction_option(help: str | None = None) -> Decorator:
    return click.option("--fraction", type=float, default=1.0, show_default=True, help=help)


def epochs_option(default: int) -> Decorator:
    return click.option("--epochs", type=click.IntRange(1), default=default, show_default=True)


def patience_option() -> Decorator:
    return click.option("--patience", type=click.IntRange(0), default=5, show_default=True)


def backbone_option(help: str | None = None) -> Decorator:
    return click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True, help=help)


def jobs_option() -> Decorator:
    """``--jobs N``: a sweep's training runs side by side in N worker processes (see
    :mod:`ecgml.experiments.parallel`); unset, as many as the thread budget allows."""
    return click.option("--jobs", type=click.IntRange(1), default=None, metavar="N",
                        help="Training runs side by side in N worker processes, each a share of the cores [default: "
                             "as many as the thread budget allows: one per core, or cores / --threads]; 1 runs them "
                             "one after another in this process.")


def backbone_kwargs_option(help: str | None = None) -> Decorator:
    """``--backbone-kwargs``: a JSON object, handed to the command as a dict (see :func:`backbone_kwargs`)."""
    return click.option("--backbone-kwargs", default="{}", show_default=True, callback=backbone_kwargs, help=help)


def backbone_kwargs(ctx: click.Context | None, param: click.Parameter | None, value: str) -> dict[str, Any]:
    """The parsed ``--backbone-kwargs``. Checked while the command line is parsed, so a bad value is a usage
    error (exit 2) naming the option, the value and the problem before anything is read or created."""
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not JSON ({exc}); give a JSON object, e.g. "
                                 '\'{"width": 0.5}\'', ctx=ctx, param=param) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"{value!r} is a JSON {_json_kind(parsed)}, not an object; give a JSON "
                                 'object, e.g. \'{"width": 0.5}\'', ctx=ctx, param=param)
    return parsed


def _json_kind(value: object) -> str:
    """What JSON calls the type of a parsed value (``[1]`` is an array, ``null`` is null)."""
    if value is None:
        return "null"
    kinds = ((bool, "boolean"), (int | float, "number"), (str, "string"), (list, "array"))
    return next(name for kind, name in kinds if isinstance(value, kind))


def crop_s_option(help: str | None = None) -> Decorator:
    return click.option("--crop-s", type=float, default=2.5, show_default=True, help=help)


def device_option(help: str | None = None) -> Decorator:
    return click.option("--device", default="auto", show_default=True, help=help)


def num_workers_option() -> Decorator:
    return click.option("--num-workers", type=click.IntRange(0), default=0, show_default=True)


def experiment_option(default: str, help: str | None = None) -> Decorator:
    return click.option("--experiment", default=default, show_default=True, help=help)


def cache_dir_option(help: str | None = None) -> Decorator:
    return click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help=help)


def runs_dir_option() -> Decorator:
    return click.option("--runs-dir", type=click.Path(path_type=Path), default=None)


def data_options(fn: Any) -> Any:
    """The options of ``data prepare`` and ``data stats``: which dataset, and how it is cached."""
    return stack([
        click.option("--source", type=click.Choice(SOURCES), required=True),
        root_option("Dataset root [default: the synthetic tree of that source]."),
        fs_option("Sampling rate of the cache (resampled from the files)."),
        task_option("shared18"),
        label_map_option(),
        splits_option("train/val/test folds."),
        leads_option("12, 6, 3, 2, 1 or a comma list of lead names."),
        click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=10.0,
                     show_default=True, help="Cached length per record (cropped or zero-padded)."),
        click.option("--bandpass", default=None, help="LOW,HIGH in Hz (e.g. 0.5,40); off by default."),
        cache_dir_option("[default: $ECGML_DATA/cache]"),
        click.option("--workers", type=click.IntRange(1), default=1, show_default=True),
        click.option("--allow-foreign", is_flag=True,
                     help="G12EC: accept records of other Challenge databases (never for fine-tuning)."),
        click.option("--rebuild-folds", is_flag=True,
                     help="G12EC: build the stored folds again (after the tree changed)."),
    ])(fn)


def train_options(task: str, experiment: str, strategy: str = "full") -> Decorator:
    """Options shared by ``pretrain``, ``train-standalone`` and ``finetune`` (one source of defaults)."""
    return stack([
        root_option(),
        fs_option(),
        task_option(task),
        label_map_option(),
        splits_option(),
        leads_option(),
        fraction_option("Label-stratified fraction of the training folds."),
        backbone_option("A registered backbone (see `ecgml models`)."),
        backbone_kwargs_option('JSON arguments of the backbone, e.g. \'{"width": 0.5}\'.'),
        epochs_option(20),
        click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True),
        click.option("--lr", type=float, default=1e-2, show_default=True),
        click.option("--weight-decay", type=float, default=1e-2, show_default=True),
        patience_option(),
        crop_s_option(),
        click.option("--stride-s", type=float, default=None, help="Evaluation window stride [crop/2]."),
        click.option("--aggregate", type=click.Choice(["max", "mean"]), default="max", show_default=True),
        click.option("--strategy", type=click.Choice(STRATEGIES), default=strategy, show_default=True,
                     help="What trains: everything, the head only, or stage by stage (fine-tuning)."),
        click.option("--seed", type=int, default=0, show_default=True),
        device_option("auto, cpu, cuda, cuda:N or mps."),
        num_workers_option(),
        click.option("--device-data", type=click.Choice(DEVICE_DATA), default=DEVICE_DATA[0], show_default=True,
                     help="Hold the splits on the device and cut batches there (auto: on CUDA when they fit)."),
        click.option("--compile/--no-compile", "compile_model", default=False, show_default=True,
                     help="torch.compile the training module."),
        experiment_option(experiment),
        click.option("--run-name", default=None),
        cache_dir_option(),
        runs_dir_option(),
        click.option("--resume", is_flag=True, help="Continue the newest unfinished run of this configuration."),
        click.option("--resume-run-id", default=None, help="Continue this MLflow run from its checkpoint."),
    ])


def prepare_config(source: str, root: str | Path | None, fs: str, task: str, label_map: str, splits: str,
                   leads: str, seconds: float, bandpass: str | None, cache_dir: Path | None,
                   workers: int, allow_foreign: bool, rebuild_folds: bool = False) -> PrepareConfig:
    """The :class:`PrepareConfig` of :func:`data_options`' values; an invalid one is a usage error."""
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


def int_list(text: str, what: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``; at least one value."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{what} {text!r} is not a comma-separated list of integers") from None
    if not values:
        raise click.BadParameter(f"give at least one {what}")
    return values


def float_list(text: str, what: str) -> tuple[float, ...]:
    """``"0.25,0.025"`` -> ``(0.25, 0.025)``."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{what} {text!r} is not a comma-separated list of numbers") from None


def name_list(text: str) -> tuple[str, ...]:
    """``"a, b,"`` -> ``("a", "b")``: a comma list of names."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def pairs(texts: tuple[str, ...], option: str) -> dict[str, str]:
    """Repeated (or ``;``-separated) ``KEY=VALUE`` options as a dict."""
    out = {}
    for text in (part.strip() for whole in texts for part in whole.split(";")):
        if not text:
            continue
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint=option)
        out[key.strip()] = value
    return out
