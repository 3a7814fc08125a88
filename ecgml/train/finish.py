"""The end of a tracked run, after the last epoch: the best epoch's predictions, metrics with
intervals and plots on validation and test, then the weights, the pyfunc model and the registration."""

from __future__ import annotations

from typing import Any

import numpy as np

from ecgml.tracking.runs import log_json
from ecgml.train.context import RunContext, RunOutcome, TrackedRun
from ecgml.train.loop import FitResult
from ecgml.train.pipeline import predictions_frame


def finish_run(run: RunContext, tracked: TrackedRun, result: FitResult,
               predictions: dict[str, np.ndarray]) -> RunOutcome:
    """After the last epoch (rank 0 alone): evaluate the best epoch's ``predictions`` (``val`` and
    ``test``, per record; the model holds that epoch's weights), log them, save and log the weights and
    the model, register it if asked."""
    import mlflow

    from ecgml.tracking.pyfunc import log_pyfunc
    from ecgml.tracking.registry import MODEL_URI_TAG, register_run_model
    from ecgml.tracking.weights import WeightMetadata, save_weights

    config, prepared, splits, model = run.config, run.prepared, run.splits, run.model
    dataset = prepared.dataset
    outcome = evaluate_and_log(run, result, predictions)
    mean, std = prepared.cache.stats
    metadata = WeightMetadata(
        backbone=model.constructor["name"], backbone_kwargs=model.constructor["kwargs"],
        num_classes=len(splits.classes), fs=config.data.data.fs, input_samples=config.crop_samples,
        leads=tuple(prepared.cache.leads), classes=tuple(splits.classes), norm_mean=tuple(map(float, mean)),
        norm_std=tuple(map(float, std)), source=dataset.source, dataset_version=dataset.version,
        cache_digest=prepared.cache.digest, task=dataset.task, label_map=dataset.label_map,
        aggregate=config.optim.aggregate, input_domain=config.input_domain, window_stride=config.stride_samples,
        extra={"run_id": tracked.run_id, "config_digest": tracked.digest},
    )
    weights_dir = save_weights(config.runs_dir / tracked.run_id / "weights", model, metadata)
    mlflow.log_artifacts(str(weights_dir), artifact_path="weights")
    model_info = log_pyfunc(weights_dir)
    mlflow.set_tag(MODEL_URI_TAG, model_info.model_uri)  # what `ecgml register` registers
    if config.register_as:
        version = register_run_model(config.register_as, tracked.run_id, model_info.model_uri,
                                     {**tracked.tags, **{f"metric.{k}": f"{v:.6f}" for k, v in outcome.items()
                                                         if k in ("best_val_macro_auc", "test_macro_auc")}})
        mlflow.set_tag("ecgml.registered_as", f"models:/{config.register_as}/{version}")
    mlflow.set_tags({"ecgml.best_epoch": str(result.best_epoch), "ecgml.stopped_early": str(result.stopped_early)})
    return RunOutcome(tracked.run_id, result.best_epoch, result.best_score, outcome["test_macro_auc"], weights_dir,
                      outcome)


def evaluate_and_log(run: RunContext, result: FitResult, predictions: dict[str, np.ndarray]) -> dict[str, Any]:
    """Metrics with intervals and plots of the best epoch's predictions on validation and test (computed
    before, by every rank together: this runs on rank 0 alone)."""
    import mlflow

    from ecgml.evaluate.auc import bootstrap_auc, per_class_report
    from ecgml.evaluate.figures import plot_auc_bars, plot_learning_curves, plot_roc_curves
    from ecgml.evaluate.ranking import ranking_summary

    config, splits = run.config, run.splits
    out: dict[str, Any] = {"best_epoch": result.best_epoch}
    folder = config.runs_dir / mlflow.active_run().info.run_id / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    history = {key: [getattr(r, key) for r in result.history] for key in ("train_loss", "val_loss", "val_macro_auc")}
    plot_learning_curves(history, folder / "learning_curves.png", title=f"{config.kind} ({config.model.backbone})")
    for name, split in (("val", splits.val), ("test", splits.test)):
        probs = predictions[name]
        frame = predictions_frame(split, splits.tables[name], splits.classes, probs)
        path = folder / f"predictions_{name}.csv"
        frame.to_csv(path, index=False)
        report = per_class_report(split.labels, probs, splits.classes)
        interval = bootstrap_auc(split.labels, probs, n_rounds=200, seed=config.seed)
        key = "best_val" if name == "val" else name  # per-epoch `val_macro_auc` is a curve; this is its best
        out[f"{key}_macro_auc"] = report["macro"]
        out[f"{key}_macro_auc_low"] = interval["low"]
        out[f"{key}_macro_auc_high"] = interval["high"]
        out[f"{key}_undefined_classes"] = report["undefined"]
        out[f"{key}_per_class_auc"] = report["auc"]
        ranking = ranking_summary(split.labels, probs, splits.classes)
        out[f"{key}_macro_auprc"] = ranking["macro_auprc"]
        out[f"{key}_fmax"] = ranking["fmax"]
        out[f"{key}_per_class_auprc"] = ranking["auprc"]
        aucs = [report["auc"][c] for c in splits.classes]
        plot_roc_curves(split.labels, probs, splits.classes, folder / f"roc_{name}.png", aucs=aucs)
        plot_auc_bars(splits.classes, aucs, folder / f"auc_{name}.png", low=interval["class_low"],
                      high=interval["class_high"], title=f"{name}: macro AUC {report['macro']:.3f} "
                      f"[{interval['low']:.3f}, {interval['high']:.3f}]")
    mlflow.log_metrics({k: float(v) for k, v in out.items() if isinstance(v, float | int) and not isinstance(v, bool)
                        and k != "best_epoch"})
    log_json(out, "metrics.json")
    mlflow.log_artifacts(str(folder), artifact_path="eval")
    return out
