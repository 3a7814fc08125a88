"""The Challenge score on hand-computed cases, and on the real 2021 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgml.data.labels import load_label_map
from ecgml.evaluate.challenge import ChallengeWeights, challenge_score, modified_confusion, shared_class_columns

WEIGHTS = """,426783006,713427006|59118001,164934002
426783006,1.0,0.5,0.5
713427006|59118001,0.5,1.0,0.2
164934002,0.5,0.2,1.0
"""


@pytest.fixture
def weights(tmp_path: Path) -> ChallengeWeights:
    (tmp_path / "w.csv").write_text(WEIGHTS)
    return ChallengeWeights.read(tmp_path / "w.csv")


def test_hand_computed_case(weights: ChallengeWeights) -> None:
    # r1: true {RBBB} predicted {RBBB}         -> A[B,B] += 1
    # r2: true {RBBB, TAb} predicted {TAb}      -> |T u P| = 2: A[B,C] += 1/2, A[C,C] += 1/2
    # r3: true {SR} predicted {RBBB}            -> |T u P| = 2: A[A,B] += 1/2
    # observed = 1*1 + 0.2*0.5 + 1*0.5 + 0.5*0.5                                  = 1.85
    # correct  = 1 (r1) + (1 + 0.2 + 0.2 + 1)/2 (r2) + 1 (r3)                      = 3.2
    # inactive (always SR): r1 0.5/2, r2 (0.5 + 0.5)/3, r3 1                       = 1.58333...
    # score = (1.85 - 1.58333) / (3.2 - 1.58333)                                   = 0.164948...
    labels = weights.binarize([{"59118001"}, {"713427006", "164934002"}, {"426783006"}])
    outputs = weights.binarize([{"713427006"}, {"164934002"}, {"59118001"}])
    np.testing.assert_allclose(modified_confusion(labels, outputs), [[0, 0.5, 0], [0, 1, 0.5], [0, 0, 0.5]])
    assert challenge_score(labels, outputs, weights) == pytest.approx((1.85 - 1.58333333) / (3.2 - 1.58333333))


def test_perfect_is_one_and_always_normal_is_zero(weights: ChallengeWeights) -> None:
    rng = np.random.default_rng(0)
    labels = rng.random((50, 3)) < 0.4
    labels[~labels.any(axis=1), 0] = True
    assert challenge_score(labels, labels, weights) == pytest.approx(1.0)
    normal = np.zeros_like(labels)
    normal[:, 0] = True
    assert challenge_score(labels, normal, weights) == pytest.approx(0.0)
    assert challenge_score(labels, ~labels, weights) < 0  # worse than doing nothing


def test_real_2021_weights_and_the_shared_classes(real_challenge: Path) -> None:
    weights = ChallengeWeights.read(real_challenge / "weights.csv")
    assert len(weights.classes) == 26 and np.allclose(weights.weights, weights.weights.T)
    assert np.allclose(np.diag(weights.weights), 1.0)
    placed, unscored = shared_class_columns(weights, load_label_map("challenge").snomed_codes)
    assert {"1AVB", "CRBBB", "IRBBB", "LAFB", "CLBBB", "IVCD", "LNGQT", "NDT"} <= set(placed)
    assert placed["CRBBB"] == weights.index_of("59118001") == weights.index_of("713427006")
    assert "ISCAN" in unscored and "SEHYP" in unscored
