"""Read a dataset by name and build (or reuse) its cache: what ``ecgml data prepare`` does."""

from __future__ import annotations

from dataclasses import dataclass

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.cache import Cache, build_cache
from ecgml.data.g12ec import read_g12ec
from ecgml.data.ptbxl import read_ptbxl
from ecgml.data.records import Dataset


def read_dataset(config: DataConfig, *, progress: bool = False) -> Dataset:
    """The :class:`Dataset` a config names, read at the dataset's native rate."""
    if config.source == "ptbxl":
        return read_ptbxl(config.root, fs=config.native_fs, task=config.task, label_map=config.label_map,
                          splits=config.split_spec)
    return read_g12ec(config.root, label_map=config.label_map, splits=config.split_spec,
                      allow_foreign=config.allow_foreign, fold_seed=config.fold_seed,
                      rebuild_folds=config.rebuild_folds, progress=progress)


@dataclass
class Prepared:
    dataset: Dataset
    cache: Cache


def prepare(config: PrepareConfig, *, progress: bool = True) -> Prepared:
    """Read, cache and label one dataset; a second call with the same inputs reuses the cache."""
    dataset = read_dataset(config.data, progress=progress)
    if dataset.labelled().empty:
        raise ValueError(f"{config.data.root}: no record has a label in task {config.data.task!r} "
                         f"under the {config.data.label_map!r} map; nothing to train on")
    cache = build_cache(dataset, config.preprocessing, config.cache_dir, workers=config.workers,
                        progress=progress)
    cache.write_labels(dataset)
    return Prepared(dataset, cache)
