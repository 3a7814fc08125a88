"""Calibration metrics and temperature scaling on synthetic cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from ecgml.evaluate.calibration import brier, calibration_errors, calibration_report, fit_temperature, sigmoid


def test_perfectly_calibrated_probabilities_have_near_zero_ece() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((200_000, 2))
    y = rng.random(p.shape) < p
    ece, mce = calibration_errors(y, p)
    assert (ece < 0.005).all() and (mce < 0.02).all()


def test_overconfidence_is_measured_and_removed_by_temperature() -> None:
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 2, (20_000, 3))
    y = rng.random(true_logits.shape) < sigmoid(true_logits)
    overconfident = true_logits * 2.5  # a model with temperature 1/2.5 too sharp
    t_global = fit_temperature(overconfident, y)
    assert t_global == pytest.approx(np.full(3, 2.5), rel=0.05)
    scaled = overconfident * np.array([1.0, 2.0, 0.5])  # different miscalibration per class
    t_class = fit_temperature(scaled, y, per_class=True)
    np.testing.assert_allclose(t_class, [2.5, 5.0, 1.25], rtol=0.05)
    before, _ = calibration_errors(y, sigmoid(overconfident))
    after, _ = calibration_errors(y, sigmoid(overconfident / t_global))
    assert (after < before / 3).all() and (after < 0.02).all()


def test_brier_and_report_by_hand() -> None:
    y = np.array([[1, 0], [0, 0]])
    p = np.array([[0.8, 0.1], [0.4, 0.3]])
    np.testing.assert_allclose(brier(y, p), [(0.04 + 0.16) / 2, (0.01 + 0.09) / 2])
    # class A: bins 8 (p=.8, y=1) and 4 (p=.4, y=0): ECE = (|1-.8| + |0-.4|) / 2 = 0.3, MCE = 0.4
    report = calibration_report(y, p, ("A", "B"))
    assert report["per_class"]["A"]["ece"] == pytest.approx(0.3)
    assert report["per_class"]["A"]["mce"] == pytest.approx(0.4)
    assert report["macro_brier"] == pytest.approx((0.1 + 0.05) / 2)


def test_reliability_diagram_is_written(tmp_path) -> None:
    from ecgml.evaluate.figures import plot_reliability

    rng = np.random.default_rng(2)
    p = rng.random((500, 3))
    y = rng.random(p.shape) < p
    path = plot_reliability(y, p ** 0.5, p, ("A", "B", "C"), tmp_path / "rel.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000
