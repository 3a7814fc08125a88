"""Calibration of multi-label probabilities: ECE, MCE, Brier, reliability data, and the scaling maps.

Each class is a binary problem; ``ece`` and ``mce`` use equal-width confidence bins over the predicted
probability of the positive outcome. Every map is ``p' = sigmoid(slope * logit(p) + bias)`` per class:
temperature scaling is ``slope = 1/T, bias = 0`` (one T, or one per class), Platt (vector) scaling
fits both per class. Parameters are fitted on validation only (the caller decides which split that is)
by minimising the binary cross-entropy. :func:`apply_calibration` is the one transform the served
model and the reports apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function without overflow warnings (``scipy.special.expit``: a large negative logit
    during a calibration fit is 0, not a RuntimeWarning in the user's log)."""
    return expit(np.asarray(logits, dtype=np.float64))


def logit(probs: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Inverse of :func:`sigmoid`, clipped so saturated probabilities give finite logits."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def reliability(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Per bin (equal width over [0, 1]) of one class: mean confidence, observed frequency, count."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(bins, weights=p, minlength=n_bins) / counts
        frequency = np.bincount(bins, weights=y, minlength=n_bins) / counts
    return {"confidence": confidence, "frequency": frequency, "count": counts,
            "centre": (np.arange(n_bins) + 0.5) / n_bins}


def calibration_errors(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """ECE and MCE of every class (columns of ``[records, classes]``)."""
    y = np.asarray(y_true)
    p = np.asarray(y_prob)
    ece, mce = np.zeros(y.shape[1]), np.zeros(y.shape[1])
    for j in range(y.shape[1]):
        r = reliability(y[:, j], p[:, j], n_bins)
        used = r["count"] > 0
        gap = np.abs(r["frequency"][used] - r["confidence"][used])
        ece[j] = float((r["count"][used] * gap).sum() / r["count"].sum())
        mce[j] = float(gap.max()) if used.any() else 0.0
    return ece, mce


def brier(y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
    """Brier score of every class."""
    return ((np.asarray(y_prob, np.float64) - np.asarray(y_true, np.float64)) ** 2).mean(axis=0)


def calibration_report(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str], n_bins: int = 10
                       ) -> dict[str, Any]:
    """Per-class and macro ECE, MCE and Brier, JSON-ready."""
    ece, mce = calibration_errors(y_true, y_prob, n_bins)
    b = brier(y_true, y_prob)
    return {
        "macro_ece": float(ece.mean()), "macro_mce": float(mce.mean()), "max_mce": float(mce.max()),
        "macro_brier": float(b.mean()),
        "per_class": {c: {"ece": float(e), "mce": float(m), "brier": float(s)}
                      for c, e, m, s in zip(classes, ece, mce, b, strict=True)},
    }


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + exp(-|z|)) form: stable for large logits
    return float((np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, per_class: bool = False) -> np.ndarray:
    """Temperature(s) minimising the validation BCE: one for all classes, or one per class."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.float64)

    def fit(zc: np.ndarray, yc: np.ndarray) -> float:
        result = minimize_scalar(lambda log_t: _nll(zc, yc, float(np.exp(log_t))), bounds=(-4.0, 4.0),
                                 method="bounded", options={"xatol": 1e-6})
        return float(np.exp(result.x))

    if per_class:
        return np.array([fit(z[:, j], y[:, j]) for j in range(z.shape[1])])
    return np.full(z.shape[1], fit(z, y))


def scaling_params(temperatures: np.ndarray) -> np.ndarray:
    """``[2, classes]`` (slope; bias) of temperature scaling: slope ``1/T``, bias 0."""
    t = np.asarray(temperatures, dtype=np.float64)
    return np.stack([1.0 / t, np.zeros_like(t)])


def apply_calibration(probs: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``sigmoid(slope * logit(p) + bias)`` per class.

    ``params`` is ``[2, classes]`` (slope; bias), or a 1-D array of temperatures as versions calibrated
    before Platt scaling existed stored them (read as slope ``1/T``, bias 0).
    """
    params = np.asarray(params, dtype=np.float64)
    if params.ndim == 1:
        params = scaling_params(params)
    p = np.asarray(probs, dtype=np.float64)
    if params.ndim != 2 or params.shape[0] != 2 or params.shape[1] != p.shape[-1]:
        raise ValueError(f"calibration parameters of shape {params.shape} do not fit {p.shape[-1]} classes "
                         "(expected [2, classes]: slope; bias)")
    return sigmoid(params[0] * logit(p) + params[1])


def _platt_targets(y: np.ndarray) -> np.ndarray:
    """Platt's (1999) smoothed targets: (N+ + 1)/(N+ + 2) and 1/(N- + 2), so a class without positives (or one
    separated perfectly) still has a finite optimum instead of a bias running off to infinity."""
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    return np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))


def fit_platt(logits: np.ndarray, y_true: np.ndarray, max_slope: float = 100.0) -> np.ndarray:
    """Per-class slope and bias (``[2, classes]``) minimising the validation BCE against Platt's targets.

    The slope is kept positive (at least 1e-3), so the map never reverses a class's ranking: AUC is unchanged.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.float64)
    out = np.zeros((2, z.shape[1]))
    for j in range(z.shape[1]):
        zj, tj = z[:, j], _platt_targets(y[:, j])

        def loss(ab: np.ndarray, zj: np.ndarray = zj, tj: np.ndarray = tj) -> tuple[float, np.ndarray]:
            s = ab[0] * zj + ab[1]
            q = sigmoid(s)
            value = float((np.maximum(s, 0) - s * tj + np.log1p(np.exp(-np.abs(s)))).mean())
            grad = q - tj
            return value, np.array([(grad * zj).mean(), grad.mean()])

        result = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                          bounds=[(1e-3, max_slope), (-30.0, 30.0)])
        out[:, j] = result.x
    return out


def binary_nll(y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy over records and classes (the criterion that picks a calibration map)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(y_prob, dtype=np.float64), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())
