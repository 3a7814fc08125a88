"""Read a dataset by name and build (or reuse) its cache: what ``ecgml data prepare`` does.

The configs come from above (``ecgml.config``); this module only needs their fields, so it names them
in two protocols instead of importing the config layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ecgml.data.cache.cache import Cache, build_cache
from ecgml.data.label_space import empty_label_space_reason
from ecgml.data.records import Dataset, SplitSpec
from ecgml.data.signal import Preprocessing
from ecgml.data.sources import ReadRequest, get_dataset_source


class DataRequest(Protocol):
    """Which dataset to read and how to label and split it (``ecgml.config.DataConfig`` is one)."""

    @property
    def source(self) -> str: ...
    @property
    def root(self) -> Path: ...
    @property
    def fs(self) -> int: ...
    @property
    def task(self) -> str: ...
    @property
    def label_map(self) -> str: ...
    @property
    def split_spec(self) -> SplitSpec: ...
    @property
    def allow_foreign(self) -> bool: ...
    @property
    def fold_seed(self) -> int: ...
    @property
    def rebuild_folds(self) -> bool: ...
    @property
    def min_positives(self) -> int: ...
    @property
    def classes(self) -> tuple[str, ...]: ...
    @property
    def tranches(self) -> tuple[str, ...]: ...
    @property
    def cv(self) -> int: ...
    @property
    def cv_fold(self) -> int: ...


class PrepareRequest(Protocol):
    """A dataset plus the preprocessing and place of its cache (``ecgml.config.PrepareConfig`` is one)."""

    @property
    def data(self) -> DataRequest: ...
    @property
    def preprocessing(self) -> Preprocessing: ...
    @property
    def cache_dir(self) -> str | os.PathLike[str]: ...
    @property
    def workers(self) -> int: ...


def read_dataset(config: DataRequest, *, progress: bool = False) -> Dataset:
    """The :class:`Dataset` a config names, read at the native rate that serves its cache rate."""
    return get_dataset_source(config.source).read(ReadRequest(
        root=Path(config.root), fs=config.fs, task=config.task, label_map=config.label_map,
        splits=config.split_spec, allow_foreign=config.allow_foreign, fold_seed=config.fold_seed,
        rebuild_folds=config.rebuild_folds, progress=progress, min_positives=config.min_positives,
        classes=tuple(config.classes), tranches=tuple(config.tranches), cv=config.cv, cv_fold=config.cv_fold,
    ))


@dataclass
class Prepared:
    dataset: Dataset
    cache: Cache


def prepare(config: PrepareRequest, *, progress: bool = True, require_labels: bool = True) -> Prepared:
    """Read, cache and label one dataset; a second call with the same inputs reuses the cache.
    ``require_labels`` False: a dataset with no labelled record is cached too (``ecgml data stats``)."""
    dataset = read_dataset(config.data, progress=progress)
    if require_labels and dataset.label_space is not None and not dataset.classes:
        raise ValueError(empty_label_space_reason(dataset.label_space, str(config.data.root)))
    if require_labels and dataset.labelled().empty:
        raise ValueError(f"{config.data.root}: no record has a label in task {config.data.task!r} "
                         f"under the {config.data.label_map!r} map; nothing to train on")
    cache = build_cache(dataset, config.preprocessing, config.cache_dir, workers=config.workers,
                        progress=progress)
    cache.write_labels(dataset)
    return Prepared(dataset, cache)
