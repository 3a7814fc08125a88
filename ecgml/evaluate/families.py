"""The PTB-XL statement families (diagnostic, form, rhythm) scored from a model of all 71 statements.

A model of the ``all`` task predicts every statement, so it can be scored on each family as a model trained for
that family is: the family's statements only, on the records that carry at least one of them (the records a
per-family run keeps). The benchmark prints both, labelled, so "the `all` model on rhythm" and "the rhythm
model" are never confused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ecgml.data.labels import ScpStatements
from ecgml.evaluate.auc import macro_auc

#: The statement families of PTB-XL's ``scp_statements.csv`` (flags of the same names), as PTB-XL tasks.
STATEMENT_FAMILIES: tuple[str, ...] = ("diagnostic", "form", "rhythm")


def family_metric(family: str) -> str:
    """The metric name of an `all` model's fold-9 score on ``family`` (in its model card and its run)."""
    return f"val_macro_auc_{family}_from_all"


def family_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """``{family: score}`` of the statement-family metrics among ``metrics`` (empty for a per-task model)."""
    return {f: metrics[family_metric(f)] for f in STATEMENT_FAMILIES if family_metric(f) in metrics}


@dataclass(frozen=True)
class FamilyScore:
    family: str
    macro_auc: float
    records: int
    classes: int


def family_scores(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                  statements: ScpStatements) -> dict[str, FamilyScore]:
    """Macro AUC of an ``all``-task model on each statement family (records with a label of the family)."""
    position = {c: i for i, c in enumerate(classes)}
    out: dict[str, FamilyScore] = {}
    for family in STATEMENT_FAMILIES:
        columns = [position[c] for c in statements.task_classes(family) if c in position]
        if not columns:
            raise ValueError(f"none of the {family} statements is among the model's classes: is it an `all` model?")
        y, p = labels[:, columns], probs[:, columns]
        keep = y.any(axis=1)
        out[family] = FamilyScore(family, macro_auc(y[keep], p[keep]), int(keep.sum()), len(columns))
    return out
