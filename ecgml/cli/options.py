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
from ecgml.data.label_space import DEFAULT_MIN_POSITIVES
from ecgml.data.labels import DEFAULT_LABEL_MAP, LABEL_MAPS, SHARED_TASK, TASKS
from ecgml.data.sources import get_dataset_source
from ecgml.defaults import CACHE_RATES, DEFAULT_BACKBONE, DEFAULT_FS, DEFAULT_SPLITS, DEFAULT_TARGET, DEVICE_DATA

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


def task_option(default: str | None) -> Decorator:
    """``--task``; None: the default task of the source (or target) read."""
    return click.option("--task", type=click.Choice(TASKS), default=default, show_default=default is not None,
                        help=None if default else "Label task [default: shared18 where the dataset has it, else "
                                                  "its own codes].")


def target_option() -> Decorator:
    """``--target``: the dataset a backbone is fine-tuned and compared on (a role, any registered source)."""
    return click.option("--target", type=click.Choice(SOURCES), default=DEFAULT_TARGET, show_default=True,
                        help="The dataset fine-tuned and compared on.")


def label_space_options() -> list[Decorator]:
    """How a target with its own label space (``cinc``, ``folder``) is labelled and which of its records are read."""
    return [
        click.option("--min-positives", type=click.IntRange(1), default=DEFAULT_MIN_POSITIVES, show_default=True,
                     help="Own label space (cinc, folder): keep every code with at least this many positive "
                          "records."),
        click.option("--classes", default="", help="Own label space: exactly these codes (comma list)."),
        click.option("--tranche", default="", help="Challenge collections: only these record-id prefixes "
                     "(comma list of A, Q, E, JS, S, HR, I) [default: all]."),
        click.option("--allow-overlap", is_flag=True,
                     help="Fine-tune or test a backbone on records of its own pretraining source (the "
                          "Challenge's HR records are PTB-XL); refused unless given."),
    ]


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


def cv_option(help: str) -> Decorator:
    """``--cv K``: K-fold cross-validation on the target's stored K folds (0: off; its checks in the configs)."""
    return click.option("--cv", type=click.IntRange(0), default=0, show_default=True, metavar="K", help=help)


def backbone_kwargs_option(help: str | None = None) -> Decorator:
    """``--backbone-kwargs``: a JSON object, handed to the command as a dict (see :func:`backbone_kwargs`)."""
    return click.option("--backbone-kwargs", default="{}", show_default=True, callback=backbone_kwargs, help=help)


def backbone_kwargs(ctx: click.Context | None, param: click.Parameter | None, value: str) -> dict[str, Any]:
    """The parsed ``--backbone-kwargs``. Checked while the command line is parsed, so a bad value is a usage
    error (exit 2) naming the option, the value and the problem before anything is read or created."""
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"{_shown(value)} is not JSON ({exc}); give a JSON object, e.g. "
                                 '\'{"width": 0.5}\'', ctx=ctx, param=param) from None
    except RecursionError:  # Python's JSON reader stops at about 1,000 levels of nesting
        raise click.BadParameter(f"{_shown(value)} nests arrays or objects too deeply to read; a backbone's keyword "
                                 'arguments are flat, e.g. \'{"width": 0.5}\'', ctx=ctx, param=param) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"{_shown(value)} is a JSON {_json_kind(parsed)}, not an object; give a JSON "
                                 'object, e.g. \'{"width": 0.5}\'', ctx=ctx, param=param)
    if _depth(parsed) > MAX_KWARGS_DEPTH:
        raise click.BadParameter(f"{_shown(value)} nests more than {MAX_KWARGS_DEPTH} levels deep; a backbone's "
                                 'keyword arguments are flat, e.g. \'{"width": 0.5}\'', ctx=ctx, param=param)
    return parsed


#: How deep ``--backbone-kwargs`` may nest (every backbone takes numbers, strings and short lists).
MAX_KWARGS_DEPTH = 8
#: How much of a bad option value a message quotes.
SHOWN_CHARS = 80


def _shown(value: str) -> str:
    """``value`` quoted for a message, cut to :data:`SHOWN_CHARS` characters."""
    return repr(value) if len(value) <= SHOWN_CHARS else f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"


def _depth(value: object) -> int:
    """How many levels of arrays and objects a parsed JSON value nests (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


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
        task_option(None),
        label_map_option(),
        splits_option("train/val/test folds."),
        *label_space_options(),
        leads_option("12, 6, 3, 2, 1 or a comma list of lead names."),
        click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Cached length per record (centre-cropped or zero-padded) [default: the source's: "
                          "10 s, 30 s for the Challenge collections]."),
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
        windows_option(),
        layer_lr_option(),
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


def windows_option() -> Decorator:
    """``--windows``: a named test-time protocol, setting ``--aggregate`` and ``--stride-s`` together."""
    from ecgml.data.windows import WINDOW_PROTOCOLS

    return click.option("--windows", type=click.Choice(list(WINDOW_PROTOCOLS)), default=None,
                        help="Test-time windows: max-half (max over half-overlapping windows, the default) or "
                             "mean-disjoint (mean over non-overlapping windows, the 2025 benchmark's); "
                             "instead of --aggregate/--stride-s. Validation, test and the served model agree.")


def layer_lr_option() -> Decorator:
    return click.option("--layer-lr-fractions", default=None, metavar="F[,F...]",
                        callback=lambda ctx, param, value: float_list(value, "--layer-lr-fractions") if value else (),
                        help="Layer-wise rates: the backbone's groups at these fractions of the head's --lr, input "
                             "to output (one for all, first,last spread geometrically, or one per group), "
                             "e.g. 0.01,0.1.")


def default_task(source: str) -> str:
    """The task a command reads ``source`` with unless told: the shared classes where it has them (the study's
    task), else its own default (a Challenge collection: its own codes)."""
    entry = get_dataset_source(source)
    return SHARED_TASK if SHARED_TASK in entry.tasks else entry.default_task


def prepare_config(*, source: str, root: str | Path | None = None, fs: str = str(DEFAULT_FS), task: str | None = None,
                   label_map: str = DEFAULT_LABEL_MAP, splits: str = DEFAULT_SPLITS, leads: str = "12",
                   seconds: float | None = None, bandpass: str | None = None, cache_dir: Path | None = None,
                   workers: int = 1, allow_foreign: bool = False, rebuild_folds: bool = False,
                   min_positives: int = DEFAULT_MIN_POSITIVES, classes: str = "", tranche: str = "",
                   cv: int = 0, cv_fold: int = 0, allow_overlap: bool = False) -> PrepareConfig:
    """The :class:`PrepareConfig` of :func:`data_options`' values; an invalid one is a usage error.
    ``task`` None: the source's default task."""
    low = high = None
    if bandpass:
        try:
            low, high = (float(x) for x in bandpass.split(","))
        except ValueError:
            raise click.BadParameter(f"--bandpass {bandpass!r} must be LOW,HIGH in Hz") from None
    try:
        data_root = Path(root) if root else default_data_dir() / "synthetic" / source
        data_config = DataConfig(source=source, root=data_root, fs=int(fs),
                                 task=task or default_task(source), label_map=label_map,
                                 splits=splits, allow_foreign=allow_foreign, rebuild_folds=rebuild_folds,
                                 min_positives=min_positives, classes=name_list(classes) if classes else (),
                                 tranches=tuple(t.upper() for t in name_list(tranche)) if tranche else (),
                                 cv=cv, cv_fold=cv_fold, allow_overlap=allow_overlap)
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
