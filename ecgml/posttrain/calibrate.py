"""``ecgml calibrate``: calibration of a trained classifier, fitted on validation predictions only, as a tracked run.

The predictions come from the training run that produced the model (``eval/predictions_{val,test}.csv``,
the best epoch's sliding-window probabilities aggregated exactly as the served model aggregates them),
so calibrating costs no inference. One temperature, one per class and Platt scaling (slope and bias per
class) are fitted on validation and one is chosen (:mod:`ecgml.evaluate.recalibration`, which also says
why a calibration cannot help); ECE (per class and macro), MCE and Brier are reported on test before and
after each; the chosen map travels with a new registered version whose pyfunc applies it.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgml.defaults import CALIBRATE_EXPERIMENT
from ecgml.evaluate.calibration import apply_calibration
from ecgml.evaluate.recalibration import (
    DEFAULT_METHOD,
    METHOD_CHOICES,
    Calibration,
    CalibrationError,
    PredictionSet,
    calibrate_predictions,
    read_predictions,
)
from ecgml.io import atomic_write_text

__all__ = ["METHOD_CHOICES", "Calibration", "CalibrationError", "CalibrationOutcome", "PredictionSet",
           "calibrate_in_child", "calibrate_predictions", "read_predictions", "run_calibration"]


@dataclass(frozen=True)
class CalibrationOutcome:
    run_id: str
    calibration: Calibration
    registered: str | None


def _source_predictions(run_id: str, folder: Path) -> tuple[PredictionSet, PredictionSet]:
    import mlflow

    out = []
    for split in ("val", "test"):
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"eval/predictions_{split}.csv",
                                                       dst_path=str(folder))
        except mlflow.exceptions.MlflowException:
            raise CalibrationError(f"run {run_id} has no eval/predictions_{split}.csv: calibrate a model trained "
                                   "by ecgml (pretrain, train-standalone or finetune)") from None
        out.append(read_predictions(Path(path)))
    return out[0], out[1]


@dataclass(frozen=True)
class _Fitted:
    """A calibration fitted before any run exists: what it calibrates (``info`` for a registered version) and how."""

    model: str
    method: str
    n_bins: int
    source_run: str
    info: Any | None
    lineage: dict[str, str]
    val: PredictionSet
    test: PredictionSet
    calibration: Calibration


def _fit(model: str, method: str, n_bins: int) -> _Fitted:
    """Resolve ``model`` to the training run that logged it and fit on that run's validation predictions."""
    from ecgml.tracking.registry import resolve_with_fallback
    from ecgml.tracking.store import check_tracking_uri

    check_tracking_uri()
    if method not in METHOD_CHOICES:
        raise CalibrationError(f"unknown method {method!r}; choose one of {', '.join(METHOD_CHOICES)}")
    info = None
    if model.startswith("runs:/"):
        source_run = model.removeprefix("runs:/").strip("/").split("/")[0]
        lineage: dict[str, str] = {}
    else:
        info, warning = resolve_with_fallback(model)
        if warning:
            sys.stderr.write(f"warning: {warning}\n")
        if not info.run_id:
            raise CalibrationError(f"models:/{info.name}/{info.version} has no source run to take predictions from")
        source_run = info.run_id
        if "ecgml.temperatures" in info.tags:
            raise CalibrationError(f"models:/{info.name}/{info.version} is already calibrated (from "
                                   f"{info.tags.get('ecgml.calibrated_from')}); calibrate its source version")
        lineage = {k: v for k, v in info.tags.items()
                   if not k.startswith(("metric.", "ecgml.promotion", "ecgml.archived", "ecgml.source_run_id"))}
    with tempfile.TemporaryDirectory() as fetched:  # fail before a run exists when there is nothing to calibrate
        val, test = _source_predictions(source_run, Path(fetched))
    return _Fitted(model, method, n_bins, source_run, info, lineage, val, test,
                   calibrate_predictions(val, test, method, n_bins))


def run_calibration(model: str, *, method: str = DEFAULT_METHOD, register_as: str | None = None, experiment: str =
                    CALIBRATE_EXPERIMENT, runs_dir: Path, n_bins: int = 10, parent_run_id: str | None = None,
                    extra_tags: dict[str, str] | None = None, run_name: str | None = None) -> CalibrationOutcome:
    """Calibrate ``model`` (``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``runs:/RUN_ID``) in a tracked run.

    A registered model gets a new version (of ``register_as``, default its own name) whose pyfunc applies
    the temperatures; a plain run (a sweep's standalone model) is only measured. With ``parent_run_id`` the
    run is a child of that run, whichever run is active; :func:`calibrate_in_child` nests it under the run it
    calibrates.
    """
    return _record(_fit(model, method, n_bins), experiment=experiment, runs_dir=runs_dir, register_as=register_as,
                   parent_run_id=parent_run_id, extra_tags=extra_tags, run_name=run_name)


def calibrate_in_child(model: str, *, runs_dir: Path, method: str = DEFAULT_METHOD, register_as: str | None = None,
                       n_bins: int = 10, extra_tags: dict[str, str] | None = None, run_name: str | None = None
                       ) -> CalibrationOutcome:
    """Calibrate ``model`` in a nested child run of the training run that logged it, in that run's experiment.

    Calibration results belong to the run they calibrate: the study's sweeps and ``ecgml main`` both
    calibrate this way, so in the MLflow UI a calibration sits under its training run, not beside it.
    """
    from ecgml.tracking.store import tracking_client

    fitted = _fit(model, method, n_bins)
    client = tracking_client()
    experiment = client.get_experiment(client.get_run(fitted.source_run).info.experiment_id).name
    return _record(fitted, experiment=experiment, runs_dir=runs_dir, register_as=register_as,
                   parent_run_id=fitted.source_run, extra_tags=extra_tags, run_name=run_name)


def _record(fitted: _Fitted, *, experiment: str, runs_dir: Path, register_as: str | None, parent_run_id: str | None,
            extra_tags: dict[str, str] | None, run_name: str | None) -> CalibrationOutcome:
    """The calibration's run: params, metrics, artifacts and, for a registered version, a new calibrated version."""
    import mlflow

    from ecgml.tracking.runs import git_commit, open_run
    from ecgml.tracking.store import tracking_client

    info, calibration = fitted.info, fitted.calibration
    tags = {"ecgml.kind": "calibrate", "ecgml.calibrated_run_id": fitted.source_run,
            "git_commit": git_commit(Path(__file__).resolve().parent),
            **({"ecgml.calibrated_version": f"models:/{info.name}/{info.version}"} if info else {}),
            **(extra_tags or {})}
    if run_name is None:
        from ecgml.tracking.run_names import calibration_run_name

        run_name = calibration_run_name(tracking_client().get_run(fitted.source_run).info.run_name or fitted.source_run)
    with open_run(experiment, run_name=run_name, tags=tags, parent_run_id=parent_run_id) as run:
        work = runs_dir / run.info.run_id
        mlflow.set_tags({"ecgml.calibration_method": calibration.method,
                         **({"ecgml.calibration_warning": " | ".join(calibration.diagnosis)[:5000]}
                            if calibration.diagnosis else {})})
        mlflow.log_params({"method": fitted.method, "chosen": calibration.method, "n_bins": fitted.n_bins,
                           "source": fitted.model, "n_val": len(fitted.val.record_ids),
                           "n_test": len(fitted.test.record_ids)})
        mlflow.log_metrics(calibration.metrics())
        out = _write_artifacts(fitted, work / "calibration")
        mlflow.log_artifacts(str(out), artifact_path="calibration")
        registered = None
        if info is not None:
            registered = _register(fitted, run.info.run_id, work, out, register_as or info.name)
            mlflow.set_tag("ecgml.registered_as", registered)
        return CalibrationOutcome(run.info.run_id, calibration, registered)


def _write_artifacts(fitted: _Fitted, out: Path) -> Path:
    """Reliability diagram, calibrated test predictions, the chosen map and ``calibration.json`` under ``out``."""
    from ecgml.evaluate.figures import plot_reliability
    from ecgml.train.pipeline import labelled_predictions

    test, calibration = fitted.test, fitted.calibration
    out.mkdir(parents=True, exist_ok=True)
    after = apply_calibration(test.probs, calibration.chosen)
    plot_reliability(test.labels, test.probs, after, test.classes, out / "reliability_test.png", fitted.n_bins)
    calibrated = labelled_predictions(pd.DataFrame({"record_id": list(test.record_ids)}), test.classes,
                                      test.labels, after)
    calibrated.to_csv(out / "predictions_test_calibrated.csv", index=False)
    np.save(out / "temperatures.npy", calibration.chosen)
    atomic_write_text(out / "calibration.json", json.dumps(calibration.document(), indent=2))
    return out


def _register(fitted: _Fitted, run_id: str, work: Path, out: Path, name: str) -> str:
    """Log the source version's weights with the chosen map as a pyfunc and register it as a version of ``name``."""
    import mlflow

    from ecgml.tracking.pyfunc import log_pyfunc
    from ecgml.tracking.registry import MODEL_URI_TAG, download_weights, register_run_model

    info, calibration = fitted.info, fitted.calibration
    weights = work / "weights"
    shutil.copytree(download_weights(info), weights, dirs_exist_ok=True)
    model_info = log_pyfunc(weights, temperatures=out / "temperatures.npy")
    mlflow.set_tag(MODEL_URI_TAG, model_info.model_uri)
    version_tags = {**fitted.lineage, "ecgml.calibrated_from": f"models:/{info.name}/{info.version}",
                    "ecgml.temperatures": json.dumps(np.round(calibration.chosen, 4).tolist()),
                    "ecgml.calibration_method": calibration.method,
                    **{f"metric.{k}": f"{v:.6f}" for k, v in calibration.metrics().items()
                       if k.startswith("test_macro_ece") or k.startswith("test_macro_brier")}}
    version = register_run_model(name, run_id, model_info.model_uri, version_tags)
    return f"models:/{name}/{version}"
