"""``ecgml calibrate``: temperature scaling of a trained classifier, fitted on validation predictions only.

The predictions come from the training run that produced the model (``eval/predictions_{val,test}.csv``,
the best epoch's sliding-window probabilities aggregated exactly as the served model aggregates them),
so calibrating costs no inference. Both one temperature for all classes and one per class are fitted
on validation; ECE (per class and macro), MCE and Brier are reported on test before and after both;
the chosen method's temperatures travel with a new registered version whose pyfunc applies them.
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

from ecgml.evaluate.calibration import calibration_report, fit_temperature, logit
from ecgml.tracking.pyfunc import apply_temperatures

METHODS = ("single", "per-class")


class CalibrationError(ValueError):
    """The model or its predictions cannot be calibrated; the message says why."""


@dataclass(frozen=True)
class PredictionSet:
    """Labels and probabilities of one split, columns in class order."""

    classes: tuple[str, ...]
    record_ids: tuple[str, ...]
    labels: np.ndarray
    probs: np.ndarray


def read_predictions(path: Path) -> PredictionSet:
    """A ``predictions_*.csv`` written by training: ``record_id``, ``true_<class>``, ``prob_<class>``."""
    frame = pd.read_csv(path, dtype={"record_id": str})
    classes = tuple(c.removeprefix("prob_") for c in frame.columns if c.startswith("prob_"))
    missing = [c for c in classes if f"true_{c}" not in frame.columns]
    if not classes or missing or "record_id" not in frame.columns:
        raise CalibrationError(f"{path}: not an ecgml predictions file (needs record_id, true_<class> and "
                               f"prob_<class> columns{'; no true_ for ' + ', '.join(missing) if missing else ''})")
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy(np.float64)
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise CalibrationError(f"{path}: probabilities must be finite and within [0, 1]")
    return PredictionSet(classes, tuple(frame["record_id"]), frame[[f"true_{c}" for c in classes]].to_numpy(np.int8),
                         probs)


@dataclass(frozen=True)
class Calibration:
    """Fitted temperatures and the before/after reports (JSON-ready in :meth:`document`)."""

    classes: tuple[str, ...]
    method: str
    temperatures: dict[str, np.ndarray]
    reports: dict[str, dict[str, dict[str, Any]]]

    @property
    def chosen(self) -> np.ndarray:
        return self.temperatures["single" if self.method == "single" else "per_class"]

    def document(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "method": self.method,
                "temperatures": {k: [float(t) for t in v] for k, v in self.temperatures.items()},
                **self.reports}

    def metrics(self) -> dict[str, float]:
        """Flat test metrics for MLflow: before, after (chosen method) and after each method."""
        test = self.reports["test"]
        after = test["after_single" if self.method == "single" else "after_per_class"]
        out: dict[str, float] = {}
        for name in ("ece", "mce", "brier"):
            out[f"test_macro_{name}_before"] = test["before"][f"macro_{name}"]
            out[f"test_macro_{name}_after"] = after[f"macro_{name}"]
        out["test_macro_ece_after_single"] = test["after_single"]["macro_ece"]
        out["test_macro_ece_after_per_class"] = test["after_per_class"]["macro_ece"]
        out["temperature_single"] = float(self.temperatures["single"][0])
        return out


def calibrate_predictions(val: PredictionSet, test: PredictionSet, method: str = "single",
                          n_bins: int = 10) -> Calibration:
    """Fit temperatures on ``val`` (one, and one per class) and report both splits before and after."""
    if method not in METHODS:
        raise CalibrationError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if val.classes != test.classes:
        raise CalibrationError("validation and test predictions name different classes")
    z_val = logit(val.probs)
    temperatures = {"single": fit_temperature(z_val, val.labels), "per_class": fit_temperature(z_val, val.labels,
                                                                                             per_class=True)}
    reports: dict[str, dict[str, dict[str, Any]]] = {}
    for name, split in (("val", val), ("test", test)):
        reports[name] = {"before": calibration_report(split.labels, split.probs, split.classes, n_bins)}
        for key, temps in temperatures.items():
            reports[name][f"after_{key}"] = calibration_report(split.labels, apply_temperatures(split.probs, temps),
                                                               split.classes, n_bins)
    return Calibration(val.classes, method, temperatures, reports)


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


def run_calibration(model: str, *, method: str = "single", register_as: str | None = None, experiment: str =
                    "ecgml-calibrate", runs_dir: Path, n_bins: int = 10, parent_run_id: str | None = None,
                    extra_tags: dict[str, str] | None = None) -> CalibrationOutcome:
    """Calibrate ``model`` (``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``runs:/RUN_ID``) in a tracked run.

    A registered model gets a new version (of ``register_as``, default its own name) whose pyfunc applies
    the temperatures; a plain run (a sweep's standalone model) is only measured.
    """
    import mlflow

    from ecgml.evaluate.figures import plot_reliability
    from ecgml.tracking.pyfunc import log_pyfunc
    from ecgml.tracking.registry import (
        MODEL_URI_TAG,
        download_weights,
        register_run_model,
        resolve_with_fallback,
    )
    from ecgml.tracking.runs import check_tracking_uri, git_commit, open_run
    from ecgml.train.pipeline import labelled_predictions

    check_tracking_uri()
    if method not in METHODS:
        raise CalibrationError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    info = None
    if model.startswith("runs:/"):
        source_run = model.removeprefix("runs:/").strip("/").split("/")[0]
        lineage = {}
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
    tags = {"ecgml.kind": "calibrate", "ecgml.calibrated_run_id": source_run, "git_commit": git_commit(
        Path(__file__).resolve().parent), **({"ecgml.calibrated_version": f"models:/{info.name}/{info.version}"}
                                             if info else {}), **(extra_tags or {})}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    with tempfile.TemporaryDirectory() as fetched:  # fail before a run exists when there is nothing to calibrate
        val, test = _source_predictions(source_run, Path(fetched))
    calibration = calibrate_predictions(val, test, method, n_bins)
    with open_run(experiment, tags=tags, nested=bool(parent_run_id)) as run:
        work = runs_dir / run.info.run_id
        mlflow.log_params({"method": method, "n_bins": n_bins, "source": model, "n_val": len(val.record_ids),
                           "n_test": len(test.record_ids)})
        mlflow.log_metrics(calibration.metrics())
        out = work / "calibration"
        out.mkdir(parents=True, exist_ok=True)
        after = apply_temperatures(test.probs, calibration.chosen)
        plot_reliability(test.labels, test.probs, after, test.classes, out / "reliability_test.png", n_bins)
        calibrated = labelled_predictions(pd.DataFrame({"record_id": list(test.record_ids)}), test.classes,
                                          test.labels, after)
        calibrated.to_csv(out / "predictions_test_calibrated.csv", index=False)
        np.save(out / "temperatures.npy", calibration.chosen)
        (out / "calibration.json").write_text(json.dumps(calibration.document(), indent=2))
        mlflow.log_artifacts(str(out), artifact_path="calibration")
        registered = None
        if info is not None:
            weights = work / "weights"
            shutil.copytree(download_weights(info), weights, dirs_exist_ok=True)
            model_info = log_pyfunc(weights, temperatures=out / "temperatures.npy")
            mlflow.set_tag(MODEL_URI_TAG, model_info.model_uri)
            name = register_as or info.name
            version_tags = {**lineage, "ecgml.calibrated_from": f"models:/{info.name}/{info.version}",
                            "ecgml.temperatures": json.dumps([round(float(t), 4) for t in calibration.chosen]),
                            "ecgml.calibration_method": method,
                            **{f"metric.{k}": f"{v:.6f}" for k, v in calibration.metrics().items()
                               if k.startswith("test_macro_ece") or k.startswith("test_macro_brier")}}
            version = register_run_model(name, run.info.run_id, model_info.model_uri, version_tags)
            registered = f"models:/{name}/{version}"
            mlflow.set_tag("ecgml.registered_as", registered)
        return CalibrationOutcome(run.info.run_id, calibration, registered)
