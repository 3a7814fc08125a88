"""ROC AUC per class and macro, vectorised over classes, with bootstrap intervals.

Classes with no positive or no negative in a split have no AUC: they are reported as NaN with their
names, never averaged in as 0.5 or silently dropped from the report.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata


def auc_per_class(y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
    """ROC AUC of every column (Mann-Whitney U from mid-ranks, so ties count half); NaN where undefined."""
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must both be [records, classes]")
    ranks = rankdata(p, axis=0)
    n_pos = y.sum(axis=0)
    n_neg = len(y) - n_pos
    rank_sum = np.where(y, ranks, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def macro_auc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean AUC over the classes where it is defined (NaN if none is)."""
    per_class = auc_per_class(y_true, y_prob)
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def per_class_report(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """AUC per class by name, positives per class, and the classes whose AUC is undefined."""
    per_class = auc_per_class(y_true, y_prob)
    positives = np.asarray(y_true).sum(axis=0)
    return {
        "auc": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, per_class, strict=True)},
        "positives": {c: int(n) for c, n in zip(classes, positives, strict=True)},
        "undefined": [c for c, a in zip(classes, per_class, strict=True) if np.isnan(a)],
        "macro": macro_auc(y_true, y_prob),
    }


def weighted_auc_rounds(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUC of one class in every bootstrap round at once.

    A resample is a vector of multiplicities ``counts[b, i]``; its AUC is the Mann-Whitney statistic with
    those weights. Sorting once and summing weights per tie group makes every round a few array
    operations instead of a fresh sort.
    """
    order = np.argsort(p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])  # first index of each tie group
    c = counts[:, order].astype(np.float64)
    pos = np.add.reduceat(c * y_sorted, starts, axis=1)
    neg = np.add.reduceat(c * ~y_sorted, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def bootstrap_auc(y_true: np.ndarray, y_prob: np.ndarray, *, n_rounds: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap interval of the macro AUC (and of each class's AUC) over resampled records.

    Every round resamples records with replacement (as multiplicities, all rounds at once); a class with
    no positive (or no negative) in a round is left out of that round's macro, as in the PTB-XL benchmark.
    1,000 rounds on 2,000 records x 71 classes take seconds (``benchmarks/bootstrap_speed.py``).
    """
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_prob, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = len(y)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_rounds).astype(np.int32)
    per_class = np.stack([weighted_auc_rounds(y[:, j], p[:, j], counts) for j in range(y.shape[1])], axis=1)
    defined = np.isfinite(per_class)
    with np.errstate(invalid="ignore"):
        macro = np.where(defined.any(axis=1), np.nansum(per_class, axis=1) / defined.sum(axis=1), np.nan)
    alpha = (1 - level) / 2
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from the split: NaN bounds, by design
        low, high = np.nanquantile(macro, [alpha, 1 - alpha])
        class_low = np.nanquantile(per_class, alpha, axis=0)
        class_high = np.nanquantile(per_class, 1 - alpha, axis=0)
    return {"estimate": macro_auc(y, p), "low": float(low), "high": float(high), "rounds": n_rounds,
            "class_low": class_low, "class_high": class_high}
