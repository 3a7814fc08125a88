"""Frozen, validated configuration of each stage; what a run logs as ``config.json``.

A click command only parses options into one of these and calls a library function with it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ecgml.data.label_space import DEFAULT_MIN_POSITIVES
from ecgml.data.labels import DEFAULT_LABEL_MAP, LABEL_MAPS, SHARED_TASK, TASKS
from ecgml.data.leads import resolve_leads
from ecgml.data.records import SplitSpec
from ecgml.data.signal import Preprocessing
from ecgml.data.sources import DATASET_SOURCES, get_dataset_source, source_names
from ecgml.defaults import DEFAULT_FS, DEFAULT_SPLITS

SOURCES: tuple[str, ...] = source_names()
#: The rates each source's files come at (Hz), as its registry entry (``ecgml.data.sources``) states them.
NATIVE_RATES: dict[str, tuple[int, ...]] = {name: s.native_rates for name, s in DATASET_SOURCES.items()}
#: What trains in a run: ``full`` (everything), ``linear`` (the head only) or ``gradual`` (the head first,
#: then one more parameter group from the top in each of equal epoch stages).
STRATEGIES: tuple[str, ...] = ("full", "linear", "gradual")
#: How a pretrained backbone is fine-tuned unless told otherwise: gradual unfreezing, as the original study
#: did. On the synthetic trees at 10% of G12EC it beat full fine-tuning at the same learning rate by about
#: 0.07 macro AUC (full fine-tuning of 80 records wrecks the pretrained features in a few steps).
DEFAULT_FINETUNE_STRATEGY = "gradual"


def own_label_space_sources() -> tuple[str, ...]:
    """The sources whose classes are their own codes (``--min-positives``, ``--classes``, ``--cv``)."""
    return tuple(name for name, s in DATASET_SOURCES.items() if s.own_label_space)


def default_data_dir() -> Path:
    """Where data, synthetic trees and caches go unless told otherwise (``$ECGML_DATA`` or ``./data``)."""
    return Path(os.environ.get("ECGML_DATA", "data"))


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to read and how to label and split it."""

    source: str
    root: Path
    fs: int = DEFAULT_FS
    task: str = SHARED_TASK
    label_map: str = DEFAULT_LABEL_MAP
    splits: str = DEFAULT_SPLITS
    allow_foreign: bool = False
    fold_seed: int = 0
    #: G12EC: discard stored folds and build them again (results on old folds stop being comparable).
    rebuild_folds: bool = False
    #: A target's own label space (sources with ``own_label_space``): codes with this many positives, or these.
    min_positives: int = DEFAULT_MIN_POSITIVES
    classes: tuple[str, ...] = ()
    #: Challenge collections: only these tranches (record-id prefixes); empty: all.
    tranches: tuple[str, ...] = ()
    #: K-fold cross-validation (0: off) and the fold this config tests (1..K).
    cv: int = 0
    cv_fold: int = 0
    #: Let a backbone pretrained on a source be fine-tuned or tested on records of that same source (the
    #: Challenge's ``HR`` records are PTB-XL): refused unless set.
    allow_overlap: bool = False

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; choose one of {', '.join(SOURCES)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        object.__setattr__(self, "classes", tuple(self.classes))  # a list read back from config.json
        object.__setattr__(self, "tranches", tuple(self.tranches))
        source = get_dataset_source(self.source)
        source.check_task(self.task)
        if (self.classes or self.tranches or self.cv) and not source.own_label_space:
            raise ValueError(f"{source.title} has fixed classes and folds: --classes, --tranche and --cv are for "
                             f"sources with their own label space ({', '.join(own_label_space_sources())})")
        if self.min_positives < 1:
            raise ValueError(f"--min-positives must be at least 1, not {self.min_positives}")
        if self.cv and (self.cv < 2 or not 1 <= self.cv_fold <= self.cv):
            raise ValueError(f"--cv {self.cv}: needs at least 2 folds, and a tested fold in 1..{self.cv}")
        if self.label_map not in LABEL_MAPS:
            raise ValueError(f"unknown label map {self.label_map!r}; choose one of {', '.join(LABEL_MAPS)}")
        SplitSpec.parse(self.splits)

    @property
    def split_spec(self) -> SplitSpec:
        return SplitSpec.parse(self.splits)

    @property
    def native_fs(self) -> int:
        """The rate to read files at: the lowest the source ships at or above the cache rate (else its highest)."""
        return get_dataset_source(self.source).native_fs(self.fs)


@dataclass(frozen=True)
class PrepareConfig:
    """A dataset plus the preprocessing and place of its cache."""

    data: DataConfig
    leads: str = "12"
    #: Seconds per cache row; None: the source's (``cache_seconds``: 10 s, 30 s for the Challenge collections).
    seconds: float | None = None
    bandpass_low: float | None = None
    bandpass_high: float | None = None
    cache_dir: Path = field(default_factory=lambda: default_data_dir() / "cache")
    workers: int = 1

    def __post_init__(self) -> None:
        if self.seconds is None:
            object.__setattr__(self, "seconds", get_dataset_source(self.data.source).cache_seconds)
        resolve_leads(self.leads)
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")
        self.preprocessing  # noqa: B018 - validates the combination early

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(
            fs=self.data.fs, leads=resolve_leads(self.leads), seconds=float(self.seconds or 0),
            bandpass_low=self.bandpass_low, bandpass_high=self.bandpass_high,
        )


def to_jsonable(config: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON types (paths as strings), for ``config.json``."""
    def convert(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    return convert(asdict(config))
