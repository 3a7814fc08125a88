"""The PhysioNet/CinC Challenge 2020/2021 score: a weighted, multi-label-normalised confusion matrix.

Definition (the Challenge's ``evaluate_model.py``): each record adds ``1 / |T ∪ P|`` to ``A[j, k]`` for
every true class ``j`` and predicted class ``k`` (``T``, ``P``: its true and predicted label sets); the
raw score is ``sum(W * A)``; it is normalised so that the perfect classifier scores 1 and the one that
always answers "sinus rhythm" (426783006) scores 0. Columns of the weights file may be equivalence groups
(``713427006|59118001``): either code counts as that class.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgml.data.labels import SINUS_RHYTHM


@dataclass(frozen=True)
class ChallengeWeights:
    """Scored classes (each a group of equivalent SNOMED codes) and their reward matrix."""

    classes: tuple[frozenset[str], ...]
    weights: np.ndarray

    @classmethod
    def read(cls, path: str | Path) -> ChallengeWeights:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        header = [frozenset(c.strip().split("|")) for c in rows[0][1:]]
        body = rows[1:]
        if len(body) != len(header) or any(frozenset(r[0].split("|")) != header[i] for i, r in enumerate(body)):
            raise ValueError(f"{path}: row and column classes of the weights matrix differ")
        weights = np.array([[float(v) for v in r[1:]] for r in body])
        return cls(tuple(header), weights)

    def index_of(self, code: str) -> int | None:
        for i, group in enumerate(self.classes):
            if code in group:
                return i
        return None

    def binarize(self, code_sets: Iterable[Iterable[str]]) -> np.ndarray:
        """``bool[records, scored classes]`` from per-record SNOMED code sets (unscored codes ignored)."""
        sets = list(code_sets)
        out = np.zeros((len(sets), len(self.classes)), dtype=bool)
        for row, codes in enumerate(sets):
            for code in codes:
                j = self.index_of(code)
                if j is not None:
                    out[row, j] = True
        return out


def modified_confusion(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """``A[j, k]``: sum over records of ``1 / |T ∪ P|`` for true ``j`` and predicted ``k``."""
    labels = np.asarray(labels, dtype=float)
    outputs = np.asarray(outputs, dtype=float)
    norm = np.maximum(np.logical_or(labels, outputs).sum(axis=1), 1.0)
    return (labels / norm[:, None]).T @ outputs


def challenge_score(labels: np.ndarray, outputs: np.ndarray, weights: ChallengeWeights,
                    normal: str = SINUS_RHYTHM) -> float:
    """Normalised Challenge score of binary ``outputs`` against ``labels`` (both over ``weights.classes``)."""
    normal_index = weights.index_of(normal)
    if normal_index is None:
        raise ValueError(f"the normal class {normal} is not among the scored classes")
    w = weights.weights
    observed = float(np.nansum(w * modified_confusion(labels, outputs)))
    correct = float(np.nansum(w * modified_confusion(labels, labels)))
    inactive_outputs = np.zeros_like(np.asarray(labels, dtype=bool))
    inactive_outputs[:, normal_index] = True
    inactive = float(np.nansum(w * modified_confusion(labels, inactive_outputs)))
    return (observed - inactive) / (correct - inactive) if correct != inactive else 0.0


def shared_class_columns(weights: ChallengeWeights, snomed_codes: Mapping[str, Sequence[str]]
                         ) -> tuple[dict[str, int], list[str]]:
    """Where each of our classes lands among the scored classes, and the classes that are not scored."""
    placed: dict[str, int] = {}
    unscored: list[str] = []
    for cls, codes in snomed_codes.items():
        hits = {weights.index_of(c) for c in codes} - {None}
        if hits:
            placed[cls] = int(min(hits))  # type: ignore[arg-type]
        else:
            unscored.append(cls)
    return placed, unscored
