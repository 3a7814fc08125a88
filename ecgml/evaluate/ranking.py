"""Average precision per class and the sample-centred Fmax of the PTB-XL benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score


def auprc_per_class(y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
    """Average precision of every class; NaN for a class with no positive (undefined)."""
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_prob, dtype=np.float64)
    return np.array([average_precision_score(y[:, j], p[:, j]) if y[:, j].any() else np.nan
                     for j in range(y.shape[1])])


def fmax(y_true: np.ndarray, y_prob: np.ndarray, thresholds: Sequence[float] | None = None) -> tuple[float, float]:
    """Maximum over thresholds of F1 from sample-centred precision and recall (Strodthoff et al. 2020).

    At threshold t, precision is averaged over the records with at least one prediction, recall over all
    records with at least one label; returns ``(fmax, best threshold)``.
    """
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_prob, dtype=np.float64)
    labelled = y.any(axis=1)
    best, best_t = 0.0, float("nan")
    for t in np.linspace(0, 1, 101) if thresholds is None else thresholds:
        pred = p >= t
        tp = (pred & y).sum(axis=1)
        predicted = pred.sum(axis=1)
        has_pred = predicted > 0
        if not has_pred.any():
            continue
        precision = float((tp[has_pred] / predicted[has_pred]).mean())
        recall = float((tp[labelled] / y[labelled].sum(axis=1)).mean()) if labelled.any() else 0.0
        if precision + recall > 0:
            f = 2 * precision * recall / (precision + recall)
            if f > best:
                best, best_t = f, float(t)
    return best, best_t


def ranking_summary(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Macro AUPRC (over defined classes), per-class AUPRC by name, and Fmax."""
    ap = auprc_per_class(y_true, y_prob)
    f, t = fmax(y_true, y_prob)
    return {
        "macro_auprc": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
        "auprc": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, ap, strict=True)},
        "fmax": f,
        "fmax_threshold": t,
    }
