"""One training run from config to registered-ready artifacts: ``ecgml pretrain`` and
``ecgml train-standalone`` are this function with different data.

Order of work: validate everything that can be checked cheaply (fractions, crop length, backbone name,
tracking store) before any data is read; prepare the cache; open (or resume) the MLflow run; train with
a checkpoint every epoch; then evaluate the best epoch on validation and test, save per-record
predictions, metrics, plots and the weights with their metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgml.config import PrepareConfig, default_data_dir, to_jsonable
from ecgml.data.cache.cache import Cache
from ecgml.data.folds import stratified_subset
from ecgml.data.label_space import DEFAULT_MIN_POSITIVES
from ecgml.data.labels import SHARED_TASK, load_label_map
from ecgml.data.prepare import Prepared
from ecgml.data.windows import INPUT_DOMAINS, default_stride
from ecgml.defaults import DEVICE_DATA, TRAINING_KINDS
from ecgml.train.data import RandomCropDataset, SlidingWindowDataset, SplitArrays
from ecgml.train.loop import EpochRecord, OptimConfig


@dataclass(frozen=True)
class ModelConfig:
    """Which registered backbone, and the arguments its constructor gets besides leads and classes."""

    backbone: str = "xresnet1d50"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one run depends on; its digest names the run for reuse and resumption."""

    kind: str
    data: PrepareConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    crop_s: float = 2.5
    eval_stride_s: float | None = None
    #: Label-stratified fraction of the training folds (same records for the same seed).
    fraction: float = 1.0
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    #: Where batches are cut: ``auto`` (on a CUDA device when the splits fit), ``on``, ``off`` (host loader).
    device_data: str = "auto"
    #: ``torch.compile`` the training module (off by default; ``benchmarks/train_throughput.py`` measures it).
    compile_model: bool = False
    center_crop: bool = False
    #: time, fft_magnitude, fft_real or fft_imag (the study's input-domain sweep).
    input_domain: str = "time"
    experiment: str = "ecgml"
    run_name: str | None = None
    runs_dir: Path = field(default_factory=lambda: default_data_dir() / "runs")
    #: Fine-tuning: the registered backbone to start from (models:/NAME/VERSION or models:/NAME@ALIAS).
    init_uri: str | None = None
    #: Fine-tuning: register the trained classifier under this name ("" to skip).
    register_as: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TRAINING_KINDS:
            raise ValueError(f"unknown run kind {self.kind!r}; choose one of {', '.join(TRAINING_KINDS)}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], not {self.fraction}")
        if self.crop_s <= 0:
            raise ValueError(f"crop length must be positive, not {self.crop_s} s")
        if self.crop_s > self.data.seconds:
            raise ValueError(f"crop of {self.crop_s} s is longer than the {self.data.seconds} s records are cached")
        if self.input_domain not in INPUT_DOMAINS:
            raise ValueError(f"unknown input domain {self.input_domain!r}; choose one of {', '.join(INPUT_DOMAINS)}")
        if self.device_data not in DEVICE_DATA:
            raise ValueError(f"device data must be one of {', '.join(DEVICE_DATA)}, not {self.device_data!r}")
        if self.eval_stride_s is not None and self.eval_stride_s <= 0:
            raise ValueError(f"evaluation stride must be positive, not {self.eval_stride_s} s")

    @property
    def crop_samples(self) -> int:
        return round(self.crop_s * self.data.data.fs)

    @property
    def stride_samples(self) -> int:
        """Samples between evaluation windows: ``eval_stride_s``, else half a window (``default_stride``)."""
        if self.eval_stride_s is None:
            return default_stride(self.crop_samples)
        return max(1, round(self.eval_stride_s * self.data.data.fs))

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(self)

    def digest(self) -> str:
        """Hash of everything that changes the result (not where files go or what the run is called)."""
        doc = self.to_json()
        # where batches are cut gives the same crops; speed settings, not results. The device too: an
        # `auto` run that landed on a GPU and a `cuda` run are the same run, and may resume each other
        for volatile in ("run_name", "runs_dir", "num_workers", "device_data", "compile_model", "experiment",
                         "register_as", "device"):
            doc.pop(volatile, None)
        doc["data"].pop("cache_dir", None)
        doc["data"].pop("workers", None)
        if not doc["optim"].get("layer_lr_fractions"):  # unset: the digest of runs from before the option
            doc["optim"].pop("layer_lr_fractions", None)
        # settings added for targets with their own label space: left out at their defaults, so a run's digest
        # is what it was before they existed and finished runs of an existing store are still found
        data_fields = doc["data"]["data"]
        for name, default in TARGET_FIELD_DEFAULTS.items():
            if data_fields.get(name) == default:
                data_fields.pop(name, None)
        if doc["optim"].get("keep") == "best":
            doc["optim"].pop("keep")
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


#: The data settings of a target's own label space, cross-validation and overlap, at their defaults.
TARGET_FIELD_DEFAULTS: dict[str, Any] = {
    "min_positives": DEFAULT_MIN_POSITIVES, "classes": [], "tranches": [], "cv": 0, "cv_fold": 0,
    "allow_overlap": False,
}


@dataclass
class Splits:
    """Cache rows, lengths and labels of train (after the fraction), validation and test."""

    classes: tuple[str, ...]
    train: SplitArrays
    val: SplitArrays
    test: SplitArrays
    tables: dict[str, pd.DataFrame]


def _smallest_fraction(labels: np.ndarray, seed: int) -> float:
    """A training fraction that keeps at least one of these records: the first of 1, 2, 3, 5, 10 records' worth
    that does (the stratified split rounds per label, so 1/N alone may keep none), else 10/N."""
    n = len(labels)
    for records in (1, 2, 3, 5, 10):
        if records >= n or len(stratified_subset(labels, records / n, seed)):
            return _rounded_up(min(1.0, records / n))
    return _rounded_up(min(1.0, 10 / n))


def _rounded_up(value: float) -> float:
    """``value`` to 3 significant digits, never below it (a message's suggestion must still be enough)."""
    shown = float(f"{value:.3g}")
    return shown if shown >= value else float(f"{value * 1.005:.3g}")


def build_splits(prepared: Prepared, fraction: float, seed: int) -> Splits:
    """Labelled records of each split as cache rows; the training fraction is label-stratified."""
    dataset, cache = prepared.dataset, prepared.cache
    classes, labels = cache.load_labels(dataset.task, dataset.label_map)
    records = cache.records.assign(_row=np.arange(len(cache.records)))
    labelled = labels.sum(axis=1) > 0
    arrays: dict[str, SplitArrays] = {}
    tables: dict[str, pd.DataFrame] = {}
    for split in ("train", "val", "test"):
        mask = records["fold"].isin(dataset.splits.folds(split)).to_numpy() & labelled
        rows = np.flatnonzero(mask)
        if split == "train" and fraction < 1 and len(rows):
            chosen = stratified_subset(labels[rows], fraction, seed)
            if len(chosen) == 0:
                raise ValueError(f"{dataset.root}: --fraction {fraction:g} of the {len(rows)} labelled training "
                                 f"record(s) (folds {dataset.splits.folds(split)}) keeps none; give at least "
                                 f"{_smallest_fraction(labels[rows], seed):.3g}, or 1 for all of them")
            rows = rows[chosen]
        if len(rows) == 0:
            raise ValueError(f"{dataset.root}: the {split} split (folds {dataset.splits.folds(split)}) has no "
                             f"labelled record in task {dataset.task!r}")
        table = records.iloc[rows]
        tables[split] = table
        arrays[split] = SplitArrays(rows=rows, n_valid=table["n_valid"].to_numpy(), labels=labels[rows],
                                    record_ids=tuple(table["record_id"]))
    return Splits(classes, arrays["train"], arrays["val"], arrays["test"], tables)


def predictions_frame(split: SplitArrays, table: pd.DataFrame, classes: tuple[str, ...],
                      probs: np.ndarray) -> pd.DataFrame:
    """One row per record: ids, fold, true labels (``true_<class>``) and probabilities (``prob_<class>``)."""
    ids = pd.DataFrame({"record_id": list(split.record_ids), "fold": table["fold"].to_numpy()})
    return labelled_predictions(ids, classes, split.labels, probs)


def labelled_predictions(ids: pd.DataFrame, classes: Sequence[str], labels: np.ndarray,
                         probs: np.ndarray) -> pd.DataFrame:
    """``ids`` (one row per record) followed by ``true_<class>`` and ``prob_<class>`` columns: the layout of
    every predictions file ecgml writes."""
    true = pd.DataFrame(labels, columns=[f"true_{c}" for c in classes])
    prob = pd.DataFrame(probs, columns=[f"prob_{c}" for c in classes])
    return pd.concat([ids.reset_index(drop=True), true, prob], axis=1)


def make_datasets(cache: Cache, splits: Splits, config: TrainConfig) -> tuple[RandomCropDataset, SlidingWindowDataset,
                                                                               SlidingWindowDataset]:
    mean, std = cache.stats
    domain = config.input_domain
    train = RandomCropDataset(cache.signals, splits.train, mean, std, config.crop_samples, seed=config.seed,
                              center=config.center_crop, domain=domain)
    val = SlidingWindowDataset(cache.signals, splits.val, mean, std, config.crop_samples, config.stride_samples,
                               domain=domain)
    test = SlidingWindowDataset(cache.signals, splits.test, mean, std, config.crop_samples, config.stride_samples,
                                domain=domain)
    return train, val, test


def epoch_metrics(record: EpochRecord) -> dict[str, float]:
    return {"train_loss": record.train_loss, "val_loss": record.val_loss, "val_macro_auc": record.val_macro_auc,
            "lr": record.lr, "epoch_seconds": record.seconds, "train_samples_per_s": record.samples_per_s}


def label_map_document(prepared: Prepared) -> dict[str, Any]:
    """What the classes of a run are: the label map of the shared task, a target's own label space (kept and
    dropped classes with counts), or a task's class list."""
    if prepared.dataset.label_space is not None:
        return {"task": prepared.dataset.task, **prepared.dataset.label_space}
    if prepared.dataset.task != SHARED_TASK:
        return {"task": prepared.dataset.task, "classes": list(prepared.dataset.classes)}
    return load_label_map(prepared.dataset.label_map).to_dict()


def check_model(model: Any, config: TrainConfig, leads: int) -> None:
    """Refuses, before anything trains, a model that cannot take this run's windows (lead count, length:
    ``Backbone.check_input``) or its layer-wise rates (no parameter groups)."""
    from ecgml.train.layer_lr import check_layer_lr

    if hasattr(model, "check_input"):
        model.check_input(leads, config.crop_samples)
    check_layer_lr(model, config.optim.layer_lr_fractions, config.model.backbone)


def check_backbone_input(config: TrainConfig) -> None:
    """:func:`check_model` on the backbone a run from scratch builds, before any data is read (a fine-tuning
    run is checked on its pretrained model once loaded)."""
    if config.init_uri:
        return
    from ecgml.data.leads import resolve_leads
    from ecgml.models import create_backbone

    leads = len(resolve_leads(config.data.leads))
    model = create_backbone(config.model.backbone, **{"in_channels": leads, "num_classes": 1, **config.model.kwargs})
    check_model(model, config, leads)


def cache_workers(config: PrepareConfig) -> PrepareConfig:
    """Use every core to build a missing cache unless told otherwise."""
    return config if config.workers > 1 else replace(config, workers=os.cpu_count() or 1)

