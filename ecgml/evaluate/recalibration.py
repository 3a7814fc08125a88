"""Fitting a calibration map to a classifier's validation predictions, choosing it, and saying when it cannot work.

Three maps (:mod:`ecgml.evaluate.calibration`): one temperature for all classes (``single``), one per class
(``per-class``) and Platt/vector scaling, a slope and a bias per class (``platt``). ``auto`` picks the map with
the lowest *cross-validated* validation NLL (k folds over the validation records: fitted on k-1, scored on the
one left out), so a map with more parameters does not win by fitting the noise it is scored on; the chosen map is
then refitted on all validation records. Test figures are reported for every map, never used to choose.

Pure functions over arrays (and one CSV reader): the tracked job (``ecgml calibrate``), the sweeps and the served
model all use this one core; nothing here imports MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgml.defaults import CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD
from ecgml.evaluate.calibration import (
    apply_calibration,
    binary_nll,
    calibration_report,
    fit_platt,
    fit_temperature,
    logit,
    scaling_params,
)

#: The calibration maps, in order of parameters (fewest first: a tie goes to the simpler map).
METHODS = CALIBRATION_METHODS
#: What a user may ask for: a map, or ``auto`` (lowest cross-validated validation NLL).
METHOD_CHOICES = (DEFAULT_CALIBRATION_METHOD, *METHODS)
DEFAULT_METHOD = DEFAULT_CALIBRATION_METHOD
#: Median (over classes) standard deviation of the validation logits below which outputs are called near-constant:
#: probabilities within about +-2.5% of their mean on every record, what an untrained network gives.
NEAR_CONSTANT_LOGIT_SD = 0.1
CV_FOLDS = 5


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


def method_key(method: str) -> str:
    """``per-class`` -> ``per_class`` (the spelling of report and metric keys)."""
    return method.replace("-", "_")


def fit_map(method: str, probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The ``[2, classes]`` (slope; bias) of ``method`` fitted on these probabilities and labels."""
    z = logit(probs)
    if method == "single":
        return scaling_params(fit_temperature(z, labels))
    if method == "per-class":
        return scaling_params(fit_temperature(z, labels, per_class=True))
    if method == "platt":
        return fit_platt(z, labels)
    raise CalibrationError(f"unknown method {method!r}; choose one of {', '.join(METHOD_CHOICES)}")


def cross_validated_nll(method: str, probs: np.ndarray, labels: np.ndarray, *, folds: int = CV_FOLDS,
                        seed: int = 0) -> float:
    """Validation NLL of ``method`` with each record scored by a map fitted without it (k-fold)."""
    n = len(labels)
    k = min(folds, n)
    if k < 2:
        return binary_nll(labels, apply_calibration(probs, fit_map(method, probs, labels)))
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty_like(probs, dtype=np.float64)
    for part in np.array_split(order, k):
        train = np.setdiff1d(order, part, assume_unique=True)
        out[part] = apply_calibration(probs[part], fit_map(method, probs[train], labels[train]))
    return binary_nll(labels, out)


def output_spread(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How much a model's outputs vary across records: median over classes of the logit sd, mean output, base rate."""
    z = logit(probs)
    return {"logit_sd": float(np.median(z.std(axis=0))), "mean_prob": float(np.mean(probs)),
            "positive_rate": float(np.mean(labels))}


def diagnose(val: PredictionSet, test: PredictionSet, method: str, reports: dict[str, dict[str, Any]],
             calibrated_test: np.ndarray) -> list[str]:
    """Why a calibration failed or cannot help, in sentences a reader can act on (empty when nothing is wrong).

    Each note starts with a fixed label and a colon (``near-constant outputs``, ``worse after calibration``,
    ``near-constant calibrated outputs``), so a report can count them by kind.
    """
    notes: list[str] = []
    spread = output_spread(val.probs, val.labels)
    if spread["logit_sd"] < NEAR_CONSTANT_LOGIT_SD:
        notes.append(
            f"near-constant outputs: the validation logits vary by a median sd of {spread['logit_sd']:.3f} across "
            f"records (below {NEAR_CONSTANT_LOGIT_SD}), mean probability {spread['mean_prob']:.3f} against a "
            f"positive rate of {spread['positive_rate']:.3f}; the model's outputs barely moved from their initial "
            "values (too little data or too few epochs), so no map can make them informative per record"
            + ("; a temperature cannot move them toward the positive rate either, only a bias can (platt)"
               if method != "platt" else ""))
    before = reports["test"]["before"]["macro_ece"]
    after = reports["test"][f"after_{method_key(method)}"]["macro_ece"]
    if after > before:
        notes.append(f"worse after calibration: the test macro ECE rose from {before:.4f} to {after:.4f}; the map "
                     f"fitted on {len(val.record_ids)} validation records does not carry over to test")
    calibrated_sd = float(np.median(np.asarray(calibrated_test).std(axis=0)))
    if calibrated_sd < 0.01:
        notes.append(f"near-constant calibrated outputs: the calibrated test probabilities vary by a median sd of "
                     f"{calibrated_sd:.4f} across records; they state each class's prevalence, not a per-record "
                     "risk (the model's scores carry little information to rank records by)")
    return notes


@dataclass(frozen=True)
class Calibration:
    """Every fitted map, the chosen one, cross-validated NLLs, before/after reports and the diagnosis."""

    classes: tuple[str, ...]
    method: str
    requested: str
    params: dict[str, np.ndarray]
    cv_nll: dict[str, float]
    reports: dict[str, dict[str, dict[str, Any]]]
    diagnosis: list[str] = field(default_factory=list)
    spread: dict[str, float] = field(default_factory=dict)

    @property
    def chosen(self) -> np.ndarray:
        """``[2, classes]`` (slope; bias) of the chosen map: what the served model applies."""
        return self.params[self.method]

    @property
    def temperatures(self) -> dict[str, np.ndarray]:
        """Temperatures of the two temperature maps (``1/slope``), keyed ``single`` and ``per_class``."""
        return {method_key(m): 1.0 / self.params[m][0] for m in ("single", "per-class")}

    def document(self) -> dict[str, Any]:
        """JSON-ready: what ``calibration/calibration.json`` holds."""
        return {"classes": list(self.classes), "method": self.method, "requested": self.requested,
                "params": {method_key(m): {"slope": [float(a) for a in p[0]], "bias": [float(b) for b in p[1]]}
                           for m, p in self.params.items()},
                "temperatures": {k: [float(t) for t in v] for k, v in self.temperatures.items()},
                "val_cv_nll": self.cv_nll, "diagnosis": self.diagnosis, "output_spread": self.spread,
                **self.reports}

    def metrics(self) -> dict[str, float]:
        """Flat test metrics for MLflow: before, after (chosen map) and after each map; the maps' validation NLL."""
        test = self.reports["test"]
        after = test[f"after_{method_key(self.method)}"]
        out: dict[str, float] = {}
        for name in ("ece", "mce", "brier"):
            out[f"test_macro_{name}_before"] = test["before"][f"macro_{name}"]
            out[f"test_macro_{name}_after"] = after[f"macro_{name}"]
        for m in METHODS:
            out[f"test_macro_ece_after_{method_key(m)}"] = test[f"after_{method_key(m)}"]["macro_ece"]
            out[f"val_cv_nll_{method_key(m)}"] = self.cv_nll[m]
        out["temperature_single"] = float(self.temperatures["single"][0])
        out["val_logit_sd"] = self.spread.get("logit_sd", float("nan"))
        out["calibration_warnings"] = float(len(self.diagnosis))
        return out

    def summary(self) -> str:
        """One line for the console: the chosen map, why, and test ECE before -> after."""
        m = self.metrics()
        nll = ", ".join(f"{k} {v:.4f}" for k, v in self.cv_nll.items())
        how = "lowest cross-validated validation NLL" if self.requested == "auto" else "as asked"
        return (f"{self.method} ({how}; NLL {nll}); test macro ECE {m['test_macro_ece_before']:.4f} -> "
                f"{m['test_macro_ece_after']:.4f}")


def calibrate_predictions(val: PredictionSet, test: PredictionSet, method: str = DEFAULT_METHOD, n_bins: int = 10,
                          *, folds: int = CV_FOLDS, seed: int = 0) -> Calibration:
    """Fit every map on ``val``, choose one (``auto``: lowest cross-validated NLL), report both splits for each."""
    if method not in METHOD_CHOICES:
        raise CalibrationError(f"unknown method {method!r}; choose one of {', '.join(METHOD_CHOICES)}")
    if val.classes != test.classes:
        raise CalibrationError("validation and test predictions name different classes")
    params = {m: fit_map(m, val.probs, val.labels) for m in METHODS}
    cv_nll = {m: cross_validated_nll(m, val.probs, val.labels, folds=folds, seed=seed) for m in METHODS}
    chosen = min(METHODS, key=lambda m: cv_nll[m]) if method == "auto" else method
    reports: dict[str, dict[str, dict[str, Any]]] = {}
    for name, split in (("val", val), ("test", test)):
        reports[name] = {"before": calibration_report(split.labels, split.probs, split.classes, n_bins)}
        for m in METHODS:
            reports[name][f"after_{method_key(m)}"] = calibration_report(
                split.labels, apply_calibration(split.probs, params[m]), split.classes, n_bins)
    notes = diagnose(val, test, chosen, reports, apply_calibration(test.probs, params[chosen]))
    return Calibration(val.classes, chosen, method, params, cv_nll, reports, notes,
                       output_spread(val.probs, val.labels))
