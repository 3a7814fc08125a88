"""Paired AUC comparison: known answers for identical, clearly better and equally good models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecgml.evaluate.auc import macro_auc
from ecgml.evaluate.paired import (
    AlignmentError,
    align_predictions,
    auc_rounds,
    bootstrap_counts,
    compare_frames,
    paired_bootstrap_auc_diff,
    paired_difference,
    paired_permutation_auc_diff,
)


def _labels(n: int = 600, k: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, k)) < 0.3


def _scores(y: np.ndarray, signal: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-(signal * y + rng.normal(0, 1, y.shape))))


def _frame(ids: list[str], y: np.ndarray, p: np.ndarray, classes: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({"record_id": ids, "fold": 10})
    for j, c in enumerate(classes):
        frame[f"true_{c}"] = y[:, j].astype(int)
    for j, c in enumerate(classes):
        frame[f"prob_{c}"] = p[:, j]
    return frame


def test_identical_predictions_differ_by_zero_with_p_one() -> None:
    y = _labels()
    p = _scores(y, 1.0, 1)
    out = paired_bootstrap_auc_diff(y, p, p.copy(), n_rounds=300)
    assert out["estimate"] == 0 and out["mean"] == 0 and out["low"] == 0 and out["high"] == 0
    assert out["p_value"] == pytest.approx(1.0)
    assert paired_permutation_auc_diff(y, p, p, n_rounds=200)["p_value"] == pytest.approx(1.0)


def test_clearly_better_predictions_have_an_interval_above_zero() -> None:
    y = _labels()
    good, weak = _scores(y, 2.5, 1), _scores(y, 0.5, 2)
    out = paired_bootstrap_auc_diff(y, good, weak, n_rounds=500)
    assert out["estimate"] == pytest.approx(macro_auc(y, good) - macro_auc(y, weak))
    assert 0 < out["low"] < out["estimate"] < out["high"]
    assert out["p_value"] < 0.01
    flipped = paired_bootstrap_auc_diff(y, weak, good, n_rounds=500)
    assert flipped["high"] < 0 and flipped["estimate"] == pytest.approx(-out["estimate"])
    assert paired_permutation_auc_diff(y, good, weak, n_rounds=300)["p_value"] < 0.01


def test_equally_good_models_are_not_called_different() -> None:
    y = _labels(n=800)
    a, b = _scores(y, 1.2, 3), _scores(y, 1.2, 4)  # same signal, independent noise
    out = paired_bootstrap_auc_diff(y, a, b, n_rounds=500, seed=1)
    assert out["low"] < 0 < out["high"]
    assert out["p_value"] > 0.05
    assert paired_permutation_auc_diff(y, a, b, n_rounds=300)["p_value"] > 0.05


def test_pairing_is_narrower_than_unpaired_intervals_for_correlated_models() -> None:
    y = _labels(n=500)
    base = _scores(y, 1.5, 5)
    better = np.clip(base + 0.02 * y, 0, 1)  # a small, consistent improvement on the same records
    out = paired_bootstrap_auc_diff(y, better, base, n_rounds=400)
    assert out["low"] > 0  # unpaired intervals of two AUCs this close would overlap almost entirely


def test_shared_rounds_give_the_same_answer_as_the_one_call() -> None:
    y = _labels()
    a, b = _scores(y, 1.0, 1), _scores(y, 1.5, 2)
    counts = bootstrap_counts(len(y), n_rounds=200, seed=7)
    shared = paired_difference(auc_rounds(y, a, counts), auc_rounds(y, b, counts),
                               macro_auc(y, a) - macro_auc(y, b))
    direct = paired_bootstrap_auc_diff(y, a, b, n_rounds=200, seed=7)
    assert shared == direct


def test_alignment_reorders_by_record_id_and_names_both_runs_on_mismatch() -> None:
    y = _labels(n=50, k=3)
    p = _scores(y, 1.0, 1)
    classes = ["AF", "IAVB", "RBBB"]
    ids = [f"E{i:05d}" for i in range(50)]
    a = _frame(ids, y, p, classes)
    b = a.sample(frac=1.0, random_state=0).reset_index(drop=True)
    b = b[["record_id", "fold", *[f"true_{c}" for c in reversed(classes)], *[f"prob_{c}" for c in reversed(classes)]]]
    pair = align_predictions(a, b, names=("ft", "sa"))
    np.testing.assert_array_equal(pair.prob_a, pair.prob_b)
    np.testing.assert_array_equal(pair.y_true, y)
    assert compare_frames(a, b, n_rounds=50)["estimate"] == 0
    with pytest.raises(AlignmentError, match=r"run-ft .*run-sa.*not tested on the same records"):
        align_predictions(a, b.iloc[:-1], names=("run-ft", "run-sa"))
    wrong = b.copy()
    wrong["true_AF"] = 1 - wrong["true_AF"]
    with pytest.raises(AlignmentError, match="disagree on the labels"):
        align_predictions(a, wrong, names=("ft", "sa"))
    with pytest.raises(AlignmentError, match="different classes"):
        align_predictions(a, b.drop(columns=["prob_AF"]), names=("ft", "sa"))
