"""Statement families scored from an `all` model: the family's columns, on the records that carry one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecgml.data.labels import ScpStatements
from ecgml.evaluate.auc import macro_auc
from ecgml.evaluate.families import family_scores


def _statements() -> ScpStatements:
    table = pd.DataFrame({"diagnostic": [1.0, 1.0, np.nan, np.nan, np.nan], "form": [np.nan, 1.0, 1.0, np.nan, np.nan],
                          "rhythm": [np.nan, np.nan, np.nan, 1.0, 1.0],
                          "diagnostic_class": ["NORM", "MI", np.nan, np.nan, np.nan],
                          "diagnostic_subclass": ["NORM", "AMI", np.nan, np.nan, np.nan]},
                         index=["NORM", "IMI", "LVOLT", "SR", "AFIB"])
    return ScpStatements(table)


def test_each_family_is_its_columns_on_its_records() -> None:
    rng = np.random.default_rng(0)
    classes = ["AFIB", "IMI", "LVOLT", "NORM", "SR"]
    labels = np.zeros((40, 5), dtype=bool)
    labels[:20, 3] = True          # NORM, no rhythm label
    labels[20:, 4] = True          # SR
    labels[30:, 0] = True          # AFIB as well
    labels[::3, 1] = True          # IMI (diagnostic and form)
    labels[::4, 2] = True
    probs = rng.random((40, 5)) * 0.5 + labels * 0.3
    scores = family_scores(labels, probs, classes, _statements())
    rhythm = scores["rhythm"]
    keep = labels[:, [0, 4]].any(axis=1)
    assert rhythm.records == keep.sum() == 20 and rhythm.classes == 2
    assert rhythm.macro_auc == pytest.approx(macro_auc(labels[keep][:, [0, 4]], probs[keep][:, [0, 4]]))
    assert scores["form"].classes == 2 and scores["diagnostic"].classes == 2
    with pytest.raises(ValueError, match="is it an `all` model"):
        family_scores(labels[:, :1], probs[:, :1], ["XYZ"], _statements())


def test_family_metrics_are_found_by_name() -> None:
    from ecgml.evaluate.families import family_metric, family_metrics

    metrics = {"val_macro_auc": 0.9, family_metric("rhythm"): 0.95, family_metric("form"): 0.85}
    assert family_metrics(metrics) == {"form": 0.85, "rhythm": 0.95}
    assert family_metrics({"val_macro_auc": 0.9}) == {}
