"""What the stages of one training run share: the request, the prepared run, the open MLflow run and
the outcome (one object each, instead of a dozen positional arguments passed from stage to stage)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ecgml.data.prepare import Prepared
from ecgml.train.data import RandomCropDataset, SlidingWindowDataset
from ecgml.train.distributed import DistContext
from ecgml.train.loop import EpochRecord, ScoreFn
from ecgml.train.pipeline import Splits, TrainConfig


@dataclass(frozen=True)
class RunRequest:
    """How the caller asked for the run: resume or not, progress bars, and what a parent study adds.

    ``parent_run_id`` makes the run a child of that run (a study, a sweep, the main job) instead of
    adopting the run ``mlflow run`` started; ``extra_tags`` are added to its tags; ``on_epoch`` is called
    after each epoch is logged (a tuning study reports and prunes from there by raising).
    """

    resume: bool = False
    resume_run_id: str | None = None
    progress: bool = True
    parent_run_id: str | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)
    on_epoch: Callable[[EpochRecord], None] | None = None


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run shares once the data is prepared and the model built (one object
    instead of a dozen positional arguments passed from stage to stage)."""

    config: TrainConfig
    prepared: Prepared
    splits: Splits
    model: torch.nn.Module
    datasets: tuple[RandomCropDataset, SlidingWindowDataset, SlidingWindowDataset]
    device: torch.device
    dist: DistContext
    score_fn: ScoreFn
    #: Tags naming the registered backbone a fine-tuning started from (empty otherwise).
    lineage: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackedRun:
    """The MLflow run a training logs into, once it is open."""

    run_id: str
    digest: str
    tags: dict[str, str]


@dataclass
class RunOutcome:
    """What a run gave; on a rank other than 0 there is no run id, weights or metrics."""

    run_id: str | None
    best_epoch: int
    val_macro_auc: float
    test_macro_auc: float
    weights_dir: Path | None
    metrics: dict[str, Any]
    #: Under torchrun: why this rank stopped early because another rank failed (that rank reports it).
    stopped_by: str | None = None
