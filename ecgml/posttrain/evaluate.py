"""``ecgml evaluate``: score a registered model, exactly as it is served, on a dataset's test split.

The model is loaded through MLflow's pyfunc loader (so a calibrated version applies its temperatures)
and fed raw cached records at their own rate with their lead names: resampling, lead selection,
standardisation, sliding windows and aggregation are the served model's own. Metrics (macro AUC with
bootstrap intervals, AUPRC, Fmax, calibration) and per-record predictions go to a tracked run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ecgml.config import PrepareConfig
from ecgml.defaults import EVALUATE_EXPERIMENT

#: Records per request when a registered version is evaluated (one batched forward each).
RECORDS_PER_REQUEST = 32


class EvaluationError(ValueError):
    """The model and the data do not fit together; the message says how."""


@dataclass(frozen=True)
class EvaluationOutcome:
    run_id: str
    metrics: dict[str, float]
    predictions: Path


def _predict(classifier: Any, signals: np.ndarray, rows: np.ndarray, n_valid: np.ndarray, fs: int,
             leads: tuple[str, ...], progress: bool) -> np.ndarray:
    """In requests of :data:`RECORDS_PER_REQUEST` records, as a client would send them (each request's
    windows in batched forwards; memory stays at one request)."""
    from tqdm import tqdm

    out = np.zeros((len(rows), len(classifier.metadata.classes)))
    with tqdm(total=len(rows), desc="evaluate", unit="record", disable=not progress) as bar:
        for lo in range(0, len(rows), RECORDS_PER_REQUEST):
            part = range(lo, min(lo + RECORDS_PER_REQUEST, len(rows)))
            request = [{"signal": np.asarray(signals[rows[i], :, : int(n_valid[i])]), "fs": fs, "leads": list(leads)}
                       for i in part]
            out[lo:lo + len(request)] = classifier.predict_proba(request)
            bar.update(len(request))
    return out


def run_evaluation(model: str, data: PrepareConfig, *, split: str = "test", experiment: str = EVALUATE_EXPERIMENT,
                   runs_dir: Path, bootstrap_rounds: int = 1000, seed: int = 0, parent_run_id: str | None = None,
                   extra_tags: dict[str, str] | None = None, progress: bool = True) -> EvaluationOutcome:
    """Evaluate registered ``model`` (``models:/NAME/VERSION`` or ``@ALIAS``) on ``split`` of ``data``.

    ``data`` names the dataset; its sampling rate and leads are replaced by the model's (the served
    model would resample and pick leads anyway; preparing at its rate avoids doing it twice).
    """
    import mlflow

    from ecgml.data.prepare import prepare
    from ecgml.evaluate.auc import bootstrap_auc, per_class_report
    from ecgml.evaluate.calibration import calibration_report
    from ecgml.evaluate.figures import plot_auc_bars, plot_reliability, plot_roc_curves
    from ecgml.evaluate.ranking import ranking_summary
    from ecgml.tracking.registry import resolve_with_fallback
    from ecgml.tracking.runs import git_commit, log_json, open_run
    from ecgml.tracking.store import check_tracking_uri, tracking_uri
    from ecgml.train.pipeline import build_splits, predictions_frame

    if split not in ("train", "val", "test"):
        raise EvaluationError(f"unknown split {split!r}; choose train, val or test")
    check_tracking_uri()
    info, warning = resolve_with_fallback(model)
    if warning:
        sys.stderr.write(f"warning: {warning}\n")
    uri = f"models:/{info.name}/{info.version}"
    mlflow.set_tracking_uri(tracking_uri())
    try:
        classifier = mlflow.pyfunc.load_model(uri).unwrap_python_model().classifier
    except (AttributeError, mlflow.exceptions.MlflowException) as exc:
        raise EvaluationError(f"{uri} is not an ecgml classifier ({exc})") from None
    meta = classifier.metadata
    data = replace(data, data=replace(data.data, fs=int(meta.fs)), leads=",".join(meta.leads))
    if data.data.source == "ptbxl" and meta.source == "ptbxl":
        data = replace(data, data=replace(data.data, task=meta.task))
    prepared = prepare(data, progress=progress)
    splits = build_splits(prepared, 1.0, seed)
    if tuple(splits.classes) != tuple(meta.classes):
        raise EvaluationError(f"{uri} predicts {len(meta.classes)} classes ({', '.join(meta.classes[:4])}...), "
                              f"the {data.data.source} {data.data.task} labels are {len(splits.classes)} classes "
                              f"({', '.join(splits.classes[:4])}...)")
    arrays = {"train": splits.train, "val": splits.val, "test": splits.test}[split]
    cache = prepared.cache
    probs = _predict(classifier, cache.signals, arrays.rows, arrays.n_valid, data.data.fs, tuple(cache.leads),
                     progress)
    tags = {"ecgml.kind": "evaluate", "ecgml.evaluated_version": uri, "dataset": data.data.source,
            "cache_digest": cache.digest, "git_commit": git_commit(Path(__file__).resolve().parent),
            **({"ecgml.temperatures": info.tags["ecgml.temperatures"]} if "ecgml.temperatures" in info.tags else {}),
            **(extra_tags or {})}
    run_name = f"evaluate {uri.removeprefix('models:/')} {data.data.source} {split}"
    with open_run(experiment, run_name=run_name, tags=tags, parent_run_id=parent_run_id) as run:
        folder = runs_dir / run.info.run_id / "eval"
        folder.mkdir(parents=True, exist_ok=True)
        report = per_class_report(arrays.labels, probs, splits.classes)
        interval = bootstrap_auc(arrays.labels, probs, n_rounds=bootstrap_rounds, seed=seed)
        ranking = ranking_summary(arrays.labels, probs, splits.classes)
        calibration = calibration_report(arrays.labels, probs, splits.classes)
        metrics = {f"{split}_macro_auc": report["macro"], f"{split}_macro_auc_low": interval["low"],
                   f"{split}_macro_auc_high": interval["high"], f"{split}_macro_auprc": ranking["macro_auprc"],
                   f"{split}_fmax": ranking["fmax"], f"{split}_macro_ece": calibration["macro_ece"],
                   f"{split}_macro_brier": calibration["macro_brier"], f"n_{split}": float(len(arrays.rows))}
        mlflow.log_params({"model": uri, "split": split, "data_root": str(data.data.root), "fs": meta.fs,
                           "bootstrap_rounds": bootstrap_rounds})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        frame = predictions_frame(arrays, splits.tables[split], splits.classes, probs)
        path = folder / f"predictions_{split}.csv"
        frame.to_csv(path, index=False)
        aucs = [report["auc"][c] for c in splits.classes]
        plot_roc_curves(arrays.labels, probs, splits.classes, folder / f"roc_{split}.png", aucs=aucs)
        plot_auc_bars(splits.classes, aucs, folder / f"auc_{split}.png", low=interval["class_low"],
                      high=interval["class_high"], title=f"{uri} on {data.data.source} {split}: macro AUC "
                      f"{report['macro']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]")
        plot_reliability(arrays.labels, probs, None, splits.classes, folder / f"reliability_{split}.png")
        log_json({**metrics, "per_class_auc": report["auc"], "per_class_auprc": ranking["auprc"],
                  "calibration": calibration}, "metrics.json")
        mlflow.log_artifacts(str(folder), artifact_path="eval")
        return EvaluationOutcome(run.info.run_id, {k: float(v) for k, v in metrics.items()}, path)
