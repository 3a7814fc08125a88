"""Calibration maps beyond one temperature: Platt scaling, the choice on validation, and the diagnosis of failures."""

from __future__ import annotations

import numpy as np
import pytest

from ecgml.evaluate.calibration import apply_calibration, fit_platt, logit, sigmoid
from ecgml.evaluate.recalibration import CalibrationError, PredictionSet, calibrate_predictions

CLASSES = ("A", "B", "C", "D")


def _sets(probs: np.ndarray, labels: np.ndarray) -> tuple[PredictionSet, PredictionSet]:
    half = len(labels) // 2
    ids = tuple(str(i) for i in range(len(labels)))
    return (PredictionSet(CLASSES, ids[:half], labels[:half], probs[:half]),
            PredictionSet(CLASSES, ids[half:], labels[half:], probs[half:]))


def test_apply_calibration_reads_old_temperatures_and_refuses_a_wrong_shape() -> None:
    p = np.array([[0.2, 0.7, 0.5, 0.9]])
    t = np.array([2.0, 0.5, 1.0, 3.0])
    np.testing.assert_allclose(apply_calibration(p, t), sigmoid(logit(p) / t))
    params = np.stack([np.full(4, 0.5), np.array([0.0, 1.0, -1.0, 0.0])])
    np.testing.assert_allclose(apply_calibration(p, params), sigmoid(0.5 * logit(p) + params[1]))
    with pytest.raises(ValueError, match=r"shape \(2, 3\) do not fit 4 classes"):
        apply_calibration(p, np.ones((2, 3)))


def test_platt_recovers_a_planted_slope_and_bias() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (40_000, 2))
    truth = np.array([[0.5, 2.0], [-1.5, 0.8]])  # slope; bias per class
    y = rng.random(z.shape) < sigmoid(truth[0] * z + truth[1])
    np.testing.assert_allclose(fit_platt(z, y), truth, atol=0.06)


def test_auto_picks_platt_where_a_temperature_cannot_shift_the_base_rate() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, (6000, 4))
    y = (rng.random(z.shape) < sigmoid(z - 2.0)).astype(np.int8)  # rare positives
    shifted = sigmoid(z)  # ranks right, every probability far too high: only a bias fixes it
    val, test = _sets(shifted, y)
    result = calibrate_predictions(val, test)
    assert result.method == "platt" and result.requested == "auto"
    assert result.cv_nll["platt"] < min(result.cv_nll["single"], result.cv_nll["per-class"])
    m = result.metrics()
    assert m["test_macro_ece_after"] == m["test_macro_ece_after_platt"] < m["test_macro_ece_after_single"]
    assert m["test_macro_ece_after"] < 0.3 * m["test_macro_ece_before"]
    assert result.diagnosis == []
    asked = calibrate_predictions(val, test, "single")
    assert asked.method == "single" and asked.metrics()["test_macro_ece_after"] == m["test_macro_ece_after_single"]
    with pytest.raises(CalibrationError, match="unknown method 'isotonic'"):
        calibrate_predictions(val, test, "isotonic")


def test_near_constant_outputs_are_diagnosed_and_named() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random((2000, 4)) < 0.06).astype(np.int8)
    stuck = 0.5 + rng.normal(0, 0.002, y.shape)  # an untrained network: every output near its initial 0.5
    val, test = _sets(stuck, y)
    single = calibrate_predictions(val, test, "single")
    assert single.reports["test"]["after_single"]["macro_ece"] > 0.3  # a temperature leaves them near 0.5
    (note, *_) = single.diagnosis
    assert note.startswith("near-constant outputs: the validation logits vary by a median sd of 0.008")
    assert "barely moved from their initial values" in note and "only a bias can (platt)" in note
    auto = calibrate_predictions(val, test)
    assert auto.method == "platt" and auto.metrics()["test_macro_ece_after"] < 0.05
    assert any("they state each class's prevalence, not a per-record risk" in n for n in auto.diagnosis)
    assert auto.metrics()["calibration_warnings"] == len(auto.diagnosis) >= 2
