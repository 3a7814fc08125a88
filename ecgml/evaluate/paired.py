"""Paired comparison of two models' macro AUC on the same test records.

Two runs evaluated on the same records are not independent samples: an unpaired comparison of their
intervals wastes most of the power. Here both prediction sets are resampled *jointly* (the same
bootstrap multiplicities for both), so the interval is that of the difference itself. A sign-flip
permutation test (swap the two models' scores record by record) is given as a DeLong-free check that
needs no bootstrap assumptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ecgml.evaluate.auc import auc_per_class, weighted_auc_rounds


class AlignmentError(ValueError):
    """Two prediction sets do not cover the same records or classes; the message names both runs."""


@dataclass(frozen=True)
class AlignedPair:
    """Labels and the two models' probabilities, rows in the same record order, columns in ``classes`` order."""

    record_ids: tuple[str, ...]
    classes: tuple[str, ...]
    y_true: np.ndarray
    prob_a: np.ndarray
    prob_b: np.ndarray


def _classes(frame: pd.DataFrame, prefix: str) -> list[str]:
    return [c.removeprefix(prefix) for c in frame.columns if c.startswith(prefix)]


def align_predictions(a: pd.DataFrame, b: pd.DataFrame, *, names: tuple[str, str] = ("a", "b")) -> AlignedPair:
    """Rows of ``b`` put in the record order of ``a``; fails (naming both) unless records, classes and labels agree.

    Frames have the ``predictions_test.csv`` layout: ``record_id``, ``true_<class>``, ``prob_<class>``.
    """
    name_a, name_b = names
    for frame, name in ((a, name_a), (b, name_b)):
        if "record_id" not in frame.columns:
            raise AlignmentError(f"predictions of {name} have no record_id column")
        if frame["record_id"].duplicated().any():
            dup = frame.loc[frame["record_id"].duplicated(), "record_id"].iloc[0]
            raise AlignmentError(f"predictions of {name} list record {dup!r} more than once")
    classes_a, classes_b = _classes(a, "prob_"), _classes(b, "prob_")
    if sorted(classes_a) != sorted(classes_b):
        only_a = sorted(set(classes_a) - set(classes_b))
        only_b = sorted(set(classes_b) - set(classes_a))
        raise AlignmentError(f"{name_a} and {name_b} predict different classes (only in {name_a}: {only_a}; "
                             f"only in {name_b}: {only_b})")
    ids_a = a["record_id"].astype(str)
    ids_b = b["record_id"].astype(str)
    set_a, set_b = set(ids_a), set(ids_b)
    if set_a != set_b:
        only_a, only_b = sorted(set_a - set_b), sorted(set_b - set_a)
        raise AlignmentError(
            f"{name_a} ({len(set_a)} records) and {name_b} ({len(set_b)} records) were not tested on the same "
            f"records: {len(only_a)} only in {name_a} (e.g. {only_a[:3]}), {len(only_b)} only in {name_b} "
            f"(e.g. {only_b[:3]}); a paired test needs the same test split (same data, fs and leads)")
    b_rows = b.set_axis(ids_b.to_numpy()).loc[ids_a.to_numpy()]
    y_a = a[[f"true_{c}" for c in classes_a]].to_numpy(dtype=bool)
    if all(f"true_{c}" in b.columns for c in classes_a):
        y_b = b_rows[[f"true_{c}" for c in classes_a]].to_numpy(dtype=bool)
        if not np.array_equal(y_a, y_b):
            bad = int((y_a != y_b).any(axis=1).sum())
            raise AlignmentError(f"{name_a} and {name_b} disagree on the labels of {bad} records; "
                                 "they were not evaluated against the same ground truth")
    return AlignedPair(
        record_ids=tuple(ids_a), classes=tuple(classes_a), y_true=y_a,
        prob_a=a[[f"prob_{c}" for c in classes_a]].to_numpy(dtype=np.float64),
        prob_b=b_rows[[f"prob_{c}" for c in classes_a]].to_numpy(dtype=np.float64),
    )


def bootstrap_counts(n_records: int, *, n_rounds: int = 1000, seed: int = 0) -> np.ndarray:
    """Multiplicities ``[rounds, records]`` of a record bootstrap, shared by every model tested on these records."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_records, np.full(n_records, 1.0 / n_records), size=n_rounds).astype(np.int32)


def auc_rounds(y_true: np.ndarray, y_prob: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-class AUC ``[rounds, classes]`` of one model in every bootstrap round given by ``counts``.

    Computed once per model: a model compared with several others on the same records reuses it.
    """
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_prob, dtype=np.float64)
    return np.stack([weighted_auc_rounds(y[:, j], p[:, j], counts) for j in range(y.shape[1])], axis=1)


def _macro_rounds(per_class: np.ndarray) -> np.ndarray:
    defined = np.isfinite(per_class)
    with np.errstate(invalid="ignore"):
        return np.where(defined.any(axis=1), np.nansum(per_class, axis=1) / defined.sum(axis=1), np.nan)


def _two_sided_p(diffs: np.ndarray) -> float:
    """Bootstrap p-value of "no difference": twice the smaller tail mass at 0, with the +1 correction."""
    d = diffs[np.isfinite(diffs)]
    if not len(d):
        return float("nan")
    below = (1 + np.count_nonzero(d <= 0)) / (len(d) + 1)
    above = (1 + np.count_nonzero(d >= 0)) / (len(d) + 1)
    return float(min(1.0, 2 * min(below, above)))


def paired_difference(rounds_a: np.ndarray, rounds_b: np.ndarray, estimate: float, *,
                      level: float = 0.95) -> dict[str, Any]:
    """Summary of macro AUC(a) - macro AUC(b) from per-class AUC rounds drawn with the *same* counts.

    A class undefined in a round (no positive or no negative there) is undefined for both models, so both
    macros average the same classes in every round.
    """
    diffs = _macro_rounds(rounds_a) - _macro_rounds(rounds_b)
    alpha = (1 - level) / 2
    finite = diffs[np.isfinite(diffs)]
    low, high = (np.quantile(finite, [alpha, 1 - alpha]) if len(finite) else (np.nan, np.nan))
    return {"estimate": float(estimate), "mean": float(finite.mean()) if len(finite) else float("nan"),
            "low": float(low), "high": float(high), "p_value": _two_sided_p(diffs), "rounds": len(finite),
            "level": level}


#: Decimal places the report prints a difference or bound with; a bound that rounds to 0 there is not away from 0.
DIGITS = 3


def significance(low: float, high: float, p_value: float, *, level: float = 0.95, digits: int = DIGITS) -> str:
    """The one reading of a paired interval: ``above``, ``below``, ``includes`` (0) or ``n/a``.

    ``above`` (a significant gain) needs all three: the lower bound strictly above 0, still above 0 at the
    ``digits`` the report prints (``+0.000`` is not above 0), and a p-value below ``1 - level`` (the bootstrap's
    interval and p-value can disagree at the edge; then neither is taken). ``below`` is the mirror image.
    """
    values = np.array([low, high, p_value], dtype=np.float64)
    if not np.isfinite(values).all():
        return "n/a"
    alpha = 1 - level
    if low > 0 and round(low, digits) > 0 and p_value < alpha:
        return "above"
    if high < 0 and round(high, digits) < 0 and p_value < alpha:
        return "below"
    return "includes"


def macro_auc_on(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Macro AUC over the classes defined in ``y_true``."""
    per_class = auc_per_class(y_true, y_prob)
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def paired_bootstrap_auc_diff(y_true: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray, *, n_rounds: int = 1000,
                              seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Macro AUC(a) - macro AUC(b) on the same records: point estimate, bootstrap mean, percentile CI, p-value.

    Records are resampled jointly (one multiplicity vector per round for both models), all rounds at once.
    The two-sided p-value is twice the smaller share of rounds on either side of 0 (p = 1 for identical
    predictions).
    """
    y = np.asarray(y_true, dtype=bool)
    a = np.asarray(prob_a, dtype=np.float64)
    b = np.asarray(prob_b, dtype=np.float64)
    if not (y.shape == a.shape == b.shape) or y.ndim != 2:
        raise ValueError(f"labels {y.shape} and probabilities {a.shape}, {b.shape} must all be [records, classes]")
    counts = bootstrap_counts(len(y), n_rounds=n_rounds, seed=seed)
    estimate = macro_auc_on(y, a) - macro_auc_on(y, b)
    return paired_difference(auc_rounds(y, a, counts), auc_rounds(y, b, counts), estimate, level=level)


def _macro_auc_rows(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Macro AUC of every row of ``scores [rounds, records, classes]`` against the fixed labels ``y``."""
    ranks = rankdata(scores, axis=1)
    n_pos = y.sum(axis=0)
    n_neg = len(y) - n_pos
    rank_sum = np.where(y[None], ranks, 0.0).sum(axis=1)
    defined = (n_pos > 0) & (n_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return auc[:, defined].mean(axis=1)


def paired_permutation_auc_diff(y_true: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray, *,
                                n_rounds: int = 1000, seed: int = 0, chunk: int = 100) -> dict[str, Any]:
    """Sign-flip permutation test of macro AUC(a) = macro AUC(b): a DeLong-free alternative to the bootstrap.

    Under the null the two models are exchangeable on each record, so each round swaps the two models'
    scores on a random half of the records (all classes of a record together, keeping the within-record
    dependence). Scores are converted to within-model ranks first, so a model's scale cannot decide the
    test. p = share of rounds with ``|diff| >= |observed|`` (+1 corrected).
    """
    y = np.asarray(y_true, dtype=bool)
    ra = rankdata(np.asarray(prob_a, dtype=np.float64), axis=0) / len(y)
    rb = rankdata(np.asarray(prob_b, dtype=np.float64), axis=0) / len(y)
    observed = macro_auc_on(y, ra) - macro_auc_on(y, rb)
    rng = np.random.default_rng(seed)
    null: list[np.ndarray] = []
    for start in range(0, n_rounds, chunk):
        size = min(chunk, n_rounds - start)
        swap = rng.random((size, len(y), 1)) < 0.5
        sa = np.where(swap, rb[None], ra[None])
        sb = np.where(swap, ra[None], rb[None])
        null.append(_macro_auc_rows(y, sa) - _macro_auc_rows(y, sb))
    diffs = np.concatenate(null)
    extreme = np.count_nonzero(np.abs(diffs) >= abs(observed) - 1e-12)
    return {"estimate": float(observed), "p_value": float((1 + extreme) / (len(diffs) + 1)), "rounds": len(diffs)}


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, *, names: tuple[str, str] = ("a", "b"), n_rounds: int = 1000,
                   seed: int = 0, level: float = 0.95, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Align two prediction frames by ``record_id`` and run :func:`paired_bootstrap_auc_diff` on them."""
    pair = align_predictions(a, b, names=names)
    keep = list(range(len(pair.classes))) if classes is None else [pair.classes.index(c) for c in classes]
    out = paired_bootstrap_auc_diff(pair.y_true[:, keep], pair.prob_a[:, keep], pair.prob_b[:, keep],
                                    n_rounds=n_rounds, seed=seed, level=level)
    out["n_records"] = len(pair.record_ids)
    return out
