"""K-fold cross-validation of one training configuration: a parent run with one child training run per fold.

For small targets (a few hundred records, or the 20 of a sample) one test fold says little; every record is
tested once instead. The folds are the target's stored K stratified folds (``ecgml_folds_cvK.csv`` beside the
data), so the fine-tuned and standalone arms see the same ones. Each child is an ordinary training run on
one fold (``ecgml.cv_fold``): trained on the other folds for the given epochs (the last epoch is kept: a
small target has no validation split big enough to pick one), tested on its fold. The parent logs the
pooled out-of-fold ``test_macro_auc`` with its bootstrap interval (``test_macro_auc_low``/``high``), per-class
AUCs, the per-fold figures and the out-of-fold predictions (``oof_predictions.csv``: record id, fold,
``true_<class>``, ``prob_<class>``).

``finetune --cv K`` and ``train-standalone --cv K`` run one; a sweep with ``--cv K`` runs one per fine-tuned and
standalone job (:func:`ecgml.experiments.study.run_job`), its parent a child of the sweep run with the job's tags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the report reads the tags and file name below without loading the trainer
    from ecgml.train.pipeline import TrainConfig

#: Tags of a cross-validation: on the parent (K) and on each child (its fold).
CV_TAG = "ecgml.cv"
CV_FOLD_TAG = "ecgml.cv_fold"
OOF_FILE = "oof_predictions.csv"
#: What a fold's training run says about where its model came from, copied to the parent (every fold starts from
#: the same backbone), so the parent is read as its arm's runs are.
LINEAGE_TAGS = ("backbone", "ecgml.backbone_version", "ecgml.backbone_run_id", "ecgml.backbone_dataset",
                "ecgml.backbone_task")


def cv_of(tag: Any) -> int:
    """K from a run's :data:`CV_TAG` (text, a number, or absent: None or NaN), 0 for a run that is no
    cross-validation."""
    try:
        return int(tag) if tag is not None and not pd.isna(tag) else 0
    except (TypeError, ValueError):
        return 0


def cv_run_name(name: str, k: int) -> str:
    """The parent run's name: the training run's name and its K (``finetune cinc xresnet1d18 f=1 s=0 cv=5``)."""
    return f"{name} cv={k}"


def check_cross_validation(config: TrainConfig) -> None:
    """Refuse, before anything trains, a ``--cv K`` the target cannot fill (every test fold must see each kept
    class, :func:`ecgml.data.sources.cinc.check_cv`): the target is read as the first fold will read it, which
    also builds and stores its K folds."""
    from ecgml.data.prepare import read_dataset

    read_dataset(config.data.data)


@dataclass
class CrossValidation:
    """What a cross-validation gave: the parent run, its children and the pooled metrics."""

    run_id: str
    fold_run_ids: list[str]
    metrics: dict[str, Any]
    predictions: pd.DataFrame


def fold_config(config: TrainConfig, fold: int) -> TrainConfig:
    """The configuration of one fold: the same run tested on fold ``fold``, keeping its last epoch (its
    validation split is its test fold: shown, never used to choose), not registered (a fold's model saw part of
    the data only)."""
    data = replace(config.data.data, cv_fold=fold)
    return replace(config, data=replace(config.data, data=data), optim=replace(config.optim, keep="last"),
                   register_as="", run_name=None)


def pooled_metrics(predictions: pd.DataFrame, classes: tuple[str, ...], *, seed: int = 0,
                   rounds: int = 1000) -> dict[str, Any]:
    """Macro AUC over the pooled out-of-fold predictions, its bootstrap interval and per-class AUCs."""
    from ecgml.evaluate.auc import bootstrap_auc, per_class_report

    labels = predictions[[f"true_{c}" for c in classes]].to_numpy()
    probs = predictions[[f"prob_{c}" for c in classes]].to_numpy()
    report = per_class_report(labels, probs, classes)
    interval = bootstrap_auc(labels, probs, n_rounds=rounds, seed=seed)
    return {"test_macro_auc": report["macro"], "test_macro_auc_low": interval["low"],
            "test_macro_auc_high": interval["high"], "test_per_class_auc": report["auc"],
            "test_undefined_classes": report["undefined"], "n_test": len(predictions)}


def run_cross_validation(config: TrainConfig, *, say: Callable[[str], None] = print, progress: bool = True,
                         parent_run_id: str | None = None,
                         extra_tags: Mapping[str, str] | None = None) -> CrossValidation:
    """Train ``config`` once per fold of its K folds, as children of one parent run, and pool the folds'
    test predictions. ``parent_run_id``: the parent is itself a child of that run (a sweep's), tagged
    ``extra_tags`` too (the sweep's tags of the job); its folds are named after it (``... fold 2/5``)."""
    import mlflow

    from ecgml.models.registry import family_of
    from ecgml.tracking.run_names import config_run_name, training_params
    from ecgml.tracking.runs import log_json, log_params_once, open_run
    from ecgml.train.runner import run_training

    k = config.data.data.cv
    if k < 2:
        raise ValueError(f"cross-validation needs --cv of at least 2, not {k}")
    name = config.run_name or cv_run_name(config_run_name(config), k)
    tags = {"ecgml.kind": config.kind, CV_TAG: str(k), "dataset": config.data.data.source, **(extra_tags or {})}
    # the folds carry the commit their parent is tagged with (a sweep's, read once where the sweep started)
    commit = {"git_commit": tags["git_commit"]} if "git_commit" in tags else {}
    with open_run(config.experiment, run_name=name, tags=tags, parent_run_id=parent_run_id) as parent:
        parent_id = parent.info.run_id
        say(f"run: {parent_id}")
        log_params_once({**training_params(config, family=family_of(config.model.backbone)), "cv": k})
        frames: list[pd.DataFrame] = []
        fold_ids: list[str] = []
        classes: tuple[str, ...] = ()
        for fold in range(1, k + 1):
            say(f"fold {fold}/{k}")
            outcome = run_training(replace(fold_config(config, fold), run_name=f"{name} fold {fold}/{k}"),
                                   parent_run_id=parent_id, progress=progress,
                                   extra_tags={CV_FOLD_TAG: str(fold), CV_TAG: str(k), **commit})
            if outcome.run_id is None:
                raise RuntimeError(f"cross-validation fold {fold}: the training run gave no run id")
            if not fold_ids:
                _copy_lineage(outcome.run_id)
            fold_ids.append(outcome.run_id)
            frame, classes = _fold_predictions(config.runs_dir / outcome.run_id / "eval", fold, classes)
            frames.append(frame)
            _log_fold_figures(config.runs_dir / outcome.run_id / "eval", fold)
            mlflow.log_metric("fold_test_macro_auc", float(outcome.test_macro_auc), step=fold)
        predictions = pd.concat(frames, ignore_index=True)
        metrics = pooled_metrics(predictions, classes, seed=config.seed)
        folder = config.runs_dir / parent_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / OOF_FILE
        predictions.to_csv(path, index=False)
        mlflow.log_artifact(str(path))
        mlflow.log_metrics({key: float(value) for key, value in metrics.items() if isinstance(value, float | int)})
        mlflow.log_metrics({f"test_auc_{c}": float(a) for c, a in metrics["test_per_class_auc"].items()
                            if a is not None})
        log_json({**metrics, "folds": fold_ids, "classes": list(classes)}, "metrics.json")
    return CrossValidation(parent_id, fold_ids, metrics, predictions)


def _fold_predictions(eval_dir: Path, fold: int, classes: tuple[str, ...]) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """One fold's test predictions, as ``oof_predictions.csv`` lays them out (its fold number first)."""
    frame = pd.read_csv(eval_dir / "predictions_test.csv", dtype={"record_id": str})
    fold_classes = tuple(c.removeprefix("true_") for c in frame.columns if c.startswith("true_"))
    if classes and fold_classes != classes:
        raise ValueError(f"fold {fold} has classes {fold_classes}, the earlier folds {classes}: the label space "
                         "changed between folds")
    frame = frame.drop(columns=[c for c in ("fold",) if c in frame.columns])
    frame.insert(1, "fold", fold)
    for c in fold_classes:  # the true labels as 0/1 integers whatever the csv held
        frame[f"true_{c}"] = np.asarray(frame[f"true_{c}"], dtype=np.int64)
    return frame, fold_classes


def _copy_lineage(fold_run_id: str) -> None:
    """The first fold's :data:`LINEAGE_TAGS` onto the active (parent) run."""
    import mlflow

    from ecgml.tracking.store import tracking_client

    tags = tracking_client().get_run(fold_run_id).data.tags
    mlflow.set_tags({k: tags[k] for k in LINEAGE_TAGS if k in tags})


def _log_fold_figures(eval_dir: Path, fold: int) -> None:
    import mlflow

    for figure in sorted(eval_dir.glob("*_test.png")):
        mlflow.log_artifact(str(figure), artifact_path=f"folds/fold{fold}")
