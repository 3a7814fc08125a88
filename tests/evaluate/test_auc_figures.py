"""AUC helpers used by the training runs, and their figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ecgml.evaluate.auc import auc_per_class, bootstrap_auc, macro_auc, per_class_report
from ecgml.evaluate.figures import plot_auc_bars, plot_learning_curves, plot_roc_curves


def test_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.random((500, 6)) < [0.5, 0.1, 0.02, 0.3, 0.7, 0.05]
    p = np.round(rng.random((500, 6)) * 0.5 + y * 0.3, 1)  # coarse: many ties
    expected = [roc_auc_score(y[:, j], p[:, j]) for j in range(6)]
    np.testing.assert_allclose(auc_per_class(y, p), expected, rtol=0, atol=1e-12)


def test_undefined_classes_are_reported_not_averaged_in() -> None:
    y = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]])
    p = np.array([[0.9, 0.1, 0.2], [0.2, 0.3, 0.8], [0.7, 0.2, 0.6], [0.1, 0.4, 0.3]])
    report = per_class_report(y, p, ("A", "B", "C"))
    assert report["undefined"] == ["B"] and report["auc"]["B"] is None
    assert report["macro"] == pytest.approx(1.0)  # mean over A and C only, not (1 + 0.5 + 1) / 3
    assert macro_auc(y, p) == pytest.approx(1.0)


def test_bootstrap_interval_contains_the_estimate_and_is_repeatable() -> None:
    rng = np.random.default_rng(1)
    y = rng.random((400, 4)) < 0.3
    p = rng.random((400, 4)) * 0.6 + y * 0.4
    first = bootstrap_auc(y, p, n_rounds=200, seed=5)
    assert first["low"] < first["estimate"] < first["high"]
    assert bootstrap_auc(y, p, n_rounds=200, seed=5)["low"] == first["low"]
    small = bootstrap_auc(y[:80], p[:80], n_rounds=200, seed=5)
    assert small["high"] - small["low"] > first["high"] - first["low"]


def test_figures_are_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    y = rng.random((100, 3)) < 0.3
    y[:, 2] = False
    p = rng.random((100, 3))
    for path in (plot_learning_curves({"train_loss": [0.7, 0.5], "val_macro_auc": [0.6, 0.8]}, tmp_path / "lc.png"),
                 plot_roc_curves(y, p, ("A", "B", "C"), tmp_path / "roc.png", aucs=[0.5, 0.5, None]),
                 plot_auc_bars(("A", "B", "C"), [0.7, 0.6, None], tmp_path / "bars.png", low=[0.6, 0.5, np.nan],
                               high=[0.8, 0.7, np.nan])):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_weighted_rounds_equal_explicit_resamples() -> None:
    from ecgml.evaluate.auc import weighted_auc_rounds

    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.2
    p = np.round(rng.random(300) + y * 0.3, 1)
    counts = rng.multinomial(300, np.full(300, 1 / 300), size=20)
    fast = weighted_auc_rounds(y, p, counts)
    for b in range(20):
        idx = np.repeat(np.arange(300), counts[b])
        assert fast[b] == pytest.approx(roc_auc_score(y[idx], p[idx]), abs=1e-12)


def test_fmax_hand_computed_and_auprc() -> None:
    from ecgml.evaluate.ranking import auprc_per_class, fmax, ranking_summary

    y = np.array([[1, 0], [0, 1], [1, 1]], dtype=bool)
    p = np.array([[0.9, 0.2], [0.6, 0.7], [0.8, 0.4]])
    # t = 0.5: predictions {0}, {0, 1}, {0}; precision per record 1, 1/2, 1 -> 5/6; recall 1, 1, 1/2 -> 5/6
    # t = 0.3: predictions {0}, {0, 1}, {0, 1}; precision 1, 1/2, 1 -> 5/6; recall 1, 1, 1 -> 1 -> F = 10/11
    f, t = fmax(y, p, thresholds=[0.3, 0.5])
    assert f == pytest.approx(2 * (5 / 6) / (5 / 6 + 1)) and t == 0.3
    ap = auprc_per_class(np.c_[y, np.zeros(3, bool)], np.c_[p, p[:, 0]])
    assert np.isnan(ap[2]) and ap[0] == pytest.approx(1.0)
    summary = ranking_summary(y, p, ("A", "B"))
    assert summary["auprc"]["A"] == pytest.approx(1.0) and 0 < summary["fmax"] <= 1


def test_roc_panels_hold_each_class_curve_and_auc() -> None:
    """The ROC grid (one axes, drawn cheaply) still shows each class's curve, titled with its AUC."""
    from ecgml.evaluate.figures import roc_panels

    rng = np.random.default_rng(4)
    y = rng.random((200, 3)) < [0.3, 0.5, 0.0]
    p = rng.random((200, 3)) + y * 0.4  # continuous: no ties
    aucs = [roc_auc_score(y[:, j], p[:, j]) for j in range(2)] + [None]
    panels = roc_panels(y, p, ("A", "B", "C"), aucs)
    assert [panel.title for panel in panels] == [f"A ({aucs[0]:.3f})", f"B ({aucs[1]:.3f})", "C (undefined)"]
    for j in range(2):
        fpr, tpr = panels[j].fpr, panels[j].tpr
        assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
        assert np.trapezoid(tpr, fpr) == pytest.approx(aucs[j], abs=1e-12)  # the curve's area is the AUC
    assert panels[2].fpr is None
