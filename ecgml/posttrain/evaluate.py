"""``ecgml evaluate``: score a registered model, exactly as it is served, on a dataset's test split.

The model is loaded through MLflow's pyfunc loader (so a calibrated version applies its temperatures)
and fed raw cached records at their own rate with their lead names: resampling, lead selection,
standardisation, sliding windows and aggregation are the served model's own. Metrics (macro AUC with
bootstrap intervals, AUPRC, Fmax, calibration) and per-record predictions go to a tracked run.

Zero-shot (``zero_shot=True``): a model scored on a target it was never trained on, over the target classes whose
SNOMED CT codes its own classes meet (:mod:`ecgml.evaluate.zero_shot`), the others listed: a PTB-XL backbone as it
is, the baseline of what fine-tuning adds. Its run is tagged ``ecgml.zero_shot``; split ``all`` scores every
labelled record (none was seen in training), under the ``test_`` metric names.
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


#: The tag of a zero-shot evaluation run.
ZERO_SHOT_TAG = "ecgml.zero_shot"
#: Splits ``evaluate`` takes; ``all`` (every labelled record) only for a zero-shot evaluation.
SPLITS: tuple[str, ...] = ("test", "val", "train", "all")


@dataclass(frozen=True)
class EvaluationOutcome:
    run_id: str
    metrics: dict[str, float]
    predictions: Path
    #: A zero-shot evaluation's map (:meth:`ecgml.evaluate.zero_shot.ZeroShotMap.to_dict`), else None.
    zero_shot: dict[str, Any] | None = None


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
                   extra_tags: dict[str, str] | None = None, progress: bool = True,
                   zero_shot: bool = False) -> EvaluationOutcome:
    """Evaluate registered ``model`` (``models:/NAME/VERSION`` or ``@ALIAS``) on ``split`` of ``data``.

    ``data`` names the dataset; its sampling rate and leads are replaced by the model's (the served
    model would resample and pick leads anyway; preparing at its rate avoids doing it twice). ``zero_shot``:
    score the model's own classes on the target's where they have an equivalent (see the module's docstring).
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

    if split not in SPLITS:
        raise EvaluationError(f"unknown split {split!r}; choose {', '.join(SPLITS)}")
    if split == "all" and not zero_shot:
        raise EvaluationError("split 'all' scores every record, training records included: it is for a zero-shot "
                              "evaluation of a model that never saw the target (--zero-shot)")
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
    if split == "all":
        classes, arrays, table = _every_record(prepared)
    else:
        splits = build_splits(prepared, 1.0, seed)
        classes, arrays, table = splits.classes, getattr(splits, split), splits.tables[split]
    mapping = None
    if zero_shot:
        mapping = _zero_shot_map(uri, meta, prepared, data.data.allow_overlap)
        keep = [classes.index(c) for c in mapping.classes]
        arrays = replace(arrays, labels=arrays.labels[:, keep])
        classes = mapping.classes
    elif tuple(classes) != tuple(meta.classes):
        raise EvaluationError(f"{uri} predicts {len(meta.classes)} classes ({', '.join(meta.classes[:4])}...), "
                              f"the {data.data.source} {data.data.task} labels are {len(classes)} classes "
                              f"({', '.join(classes[:4])}...); --zero-shot scores it on the classes that have "
                              "an equivalent")
    cache = prepared.cache
    probs = _predict(classifier, cache.signals, arrays.rows, arrays.n_valid, data.data.fs, tuple(cache.leads),
                     progress)
    if mapping is not None:
        probs = mapping.probabilities(probs)
    tags = {"ecgml.kind": "evaluate", "ecgml.evaluated_version": uri, "dataset": data.data.source,
            **({ZERO_SHOT_TAG: "true", "ecgml.model_dataset": str(meta.source)} if zero_shot else {}),
            "cache_digest": cache.digest, "git_commit": git_commit(Path(__file__).resolve().parent),
            **({"ecgml.temperatures": info.tags["ecgml.temperatures"]} if "ecgml.temperatures" in info.tags else {}),
            **(extra_tags or {})}
    run_name = f"evaluate {uri.removeprefix('models:/')} {data.data.source} {split}" + (" zero-shot" if zero_shot
                                                                                          else "")
    # every record of a zero-shot evaluation is a test record: the model never saw the target
    prefix = "test" if split == "all" else split
    with open_run(experiment, run_name=run_name, tags=tags, parent_run_id=parent_run_id) as run:
        folder = runs_dir / run.info.run_id / "eval"
        folder.mkdir(parents=True, exist_ok=True)
        report = per_class_report(arrays.labels, probs, classes)
        interval = bootstrap_auc(arrays.labels, probs, n_rounds=bootstrap_rounds, seed=seed)
        ranking = ranking_summary(arrays.labels, probs, classes)
        calibration = calibration_report(arrays.labels, probs, classes)
        metrics = {f"{prefix}_macro_auc": report["macro"], f"{prefix}_macro_auc_low": interval["low"],
                   f"{prefix}_macro_auc_high": interval["high"], f"{prefix}_macro_auprc": ranking["macro_auprc"],
                   f"{prefix}_fmax": ranking["fmax"], f"{prefix}_macro_ece": calibration["macro_ece"],
                   f"{prefix}_macro_brier": calibration["macro_brier"], f"n_{prefix}": float(len(arrays.rows))}
        mlflow.log_params({"model": uri, "split": split, "data_root": str(data.data.root), "fs": meta.fs,
                           "bootstrap_rounds": bootstrap_rounds, "zero_shot": zero_shot})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        if mapping is not None:
            mlflow.log_metrics({f"{prefix}_auc_{c}": float(a) for c, a in report["auc"].items() if a is not None})
            log_json({**mapping.to_dict(), "model_classes": list(meta.classes)}, "zero_shot.json")
        frame = predictions_frame(arrays, table, classes, probs)
        path = folder / f"predictions_{split}.csv"
        frame.to_csv(path, index=False)
        aucs = [report["auc"][c] for c in classes]
        plot_roc_curves(arrays.labels, probs, classes, folder / f"roc_{split}.png", aucs=aucs)
        plot_auc_bars(classes, aucs, folder / f"auc_{split}.png", low=interval["class_low"],
                      high=interval["class_high"], title=f"{uri} on {data.data.source} {split}: macro AUC "
                      f"{report['macro']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]")
        plot_reliability(arrays.labels, probs, None, classes, folder / f"reliability_{split}.png")
        log_json({**metrics, "per_class_auc": report["auc"], "per_class_auprc": ranking["auprc"],
                  "calibration": calibration}, "metrics.json")
        mlflow.log_artifacts(str(folder), artifact_path="eval")
        return EvaluationOutcome(run.info.run_id, {k: float(v) for k, v in metrics.items()}, path,
                                 None if mapping is None else mapping.to_dict())


def _every_record(prepared: Any) -> tuple[tuple[str, ...], Any, Any]:
    """Classes, split arrays and records table of every labelled record of a prepared dataset."""
    from ecgml.train.data import SplitArrays

    dataset, cache = prepared.dataset, prepared.cache
    classes, labels = cache.load_labels(dataset.task, dataset.label_map)
    rows = np.flatnonzero(labels.sum(axis=1) > 0)
    if not len(rows):
        raise EvaluationError(f"{dataset.root}: no labelled record in task {dataset.task!r}")
    table = cache.records.iloc[rows]
    return tuple(classes), SplitArrays(rows=rows, n_valid=table["n_valid"].to_numpy(), labels=labels[rows],
                                       record_ids=tuple(table["record_id"])), table


def _zero_shot_map(uri: str, meta: Any, prepared: Any, allow_overlap: bool) -> Any:
    """The map of the model's classes onto the dataset's; refused when no class meets, or when the dataset holds
    records of the model's own training source (the Challenge's HR records are PTB-XL) unless allowed."""
    from ecgml.data.sources import overlap_refusal
    from ecgml.evaluate.zero_shot import ZeroShotError, class_codes, zero_shot_map

    dataset = prepared.dataset
    reason = None if allow_overlap else overlap_refusal(dataset, str(meta.source), uri)
    if reason:
        raise EvaluationError(reason)
    classes, _ = prepared.cache.load_labels(dataset.task, dataset.label_map)
    try:
        mapping = zero_shot_map(class_codes(meta.task, meta.label_map, tuple(meta.classes)),
                                class_codes(dataset.task, dataset.label_map, tuple(classes)))
    except ZeroShotError as exc:
        raise EvaluationError(f"{uri}: {exc}") from None
    if not mapping.classes:
        raise EvaluationError(f"{uri} ({meta.source} {meta.task}: {len(meta.classes)} classes) has no class with an "
                              f"equivalent among the {len(classes)} classes of {dataset.root} "
                              f"({', '.join(classes[:6])}...)")
    return mapping
