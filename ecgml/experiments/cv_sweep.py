"""A cross-validated sweep's arms fold by fold: at each setting, every fine-tuned run against each standalone run of
the same seed, both cross-validated on the target's same stored K folds.

Why here: the sweep's summary (``ecgml experiment ... --cv K``) and the report's section show the same pairs and the
same tables; the pairs are chosen here once, the statistics are :mod:`ecgml.experiments.cv_compare`'s (the paired
bootstrap per fold and pooled), the table its :meth:`~ecgml.experiments.cv_compare.CvComparison.markdown`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from ecgml.experiments.analysis import model_label
from ecgml.experiments.collect import setting_label
from ecgml.experiments.crossval import cv_of
from ecgml.experiments.schema import FINETUNE, STANDALONE

if TYPE_CHECKING:
    from ecgml.experiments.cv_compare import CvComparison


@dataclass(frozen=True)
class CvPair:
    """A cross-validated fine-tuned run and the cross-validated standalone run it is compared with."""

    setting: dict[str, Any]
    seed: int
    k: int
    finetune_run_id: str
    standalone_run_id: str
    #: How each side's model is named: its backbone (the sweep's log) or family (the report).
    finetune_model: str
    standalone_model: str

    @property
    def names(self) -> tuple[str, str]:
        return (model_label(FINETUNE, self.finetune_model), model_label(STANDALONE, self.standalone_model))

    def heading(self, target: str) -> str:
        """``target_fraction=1.0, seed 0: fine-tuned x vs standalone y, 5 folds of CPSC 2018``."""
        return (f"{setting_label(self.setting)}, seed {self.seed}: {self.names[0]} vs {self.names[1]}, "
                f"{self.k} folds of {target}")


def _setting(value: Any) -> dict[str, Any]:
    return dict(json.loads(value)) if isinstance(value, str) else dict(value)


def cv_pairs(rows: Iterable[Mapping[str, Any]]) -> list[CvPair]:
    """The pairs to compare fold by fold, in the rows' order. ``rows``: ``run_id``, ``arm``, ``model``, ``setting``
    (a dict or its JSON), ``seed``, ``cv`` (K, or 0/None for a run that is no cross-validation).

    A standalone run serves every fine-tuned setting that includes its own (the strategy sweep trains one baseline
    per fraction for all its strategies), as the report's paired tests pair them; runs with different K are not
    paired (their folds differ)."""
    runs = [{**r, "setting": _setting(r["setting"]), "cv": cv_of(r.get("cv"))} for r in rows]
    runs = [r for r in runs if r["cv"]]
    pairs: list[CvPair] = []
    seen: set[tuple[str, str]] = set()
    for ft in (r for r in runs if r["arm"] == FINETUNE):
        for sa in (r for r in runs if r["arm"] == STANDALONE):
            served = all(ft["setting"].get(k) == v for k, v in sa["setting"].items())
            key = (str(ft["run_id"]), str(sa["run_id"]))
            if sa["seed"] != ft["seed"] or sa["cv"] != ft["cv"] or not served or key in seen:
                continue
            seen.add(key)
            pairs.append(CvPair(ft["setting"], int(ft["seed"]), ft["cv"], *key, str(ft["model"]), str(sa["model"])))
    return pairs


def comparison_frame(pair: CvPair, comparison: CvComparison) -> pd.DataFrame:
    """One comparison's table with the pair it compares, for a CSV of every pair."""
    return comparison.table.assign(setting=setting_label(pair.setting), seed=pair.seed, k=pair.k,
                                   finetune=pair.names[0], standalone=pair.names[1],
                                   finetune_run_id=pair.finetune_run_id, standalone_run_id=pair.standalone_run_id)


def compare_sweep_runs(rows: Iterable[Mapping[str, Any]], *, target: str, say: Callable[[str], None],
                       n_rounds: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Compare a finished sweep's cross-validated pairs (:func:`cv_pairs` of ``rows``) fold by fold from their
    parents' ``oof_predictions.csv`` in the tracking store, say each table and its sentence, and return every
    table in one frame. A pair that cannot be compared is said, with why, and left out."""
    from ecgml.evaluate.paired import AlignmentError
    from ecgml.experiments.cv_compare import CvCompareError, compare_cv_runs

    frames: list[pd.DataFrame] = []
    for pair in cv_pairs(rows):
        try:
            comparison = compare_cv_runs(pair.finetune_run_id, pair.standalone_run_id, n_rounds=n_rounds, seed=seed,
                                         names=pair.names)
        except (CvCompareError, AlignmentError, OSError) as exc:
            say(f"fold by fold, {pair.heading(target)}: not compared ({exc})")
            continue
        say(f"fold by fold, {pair.heading(target)}:\n{comparison.markdown()}\n{comparison.summary()}")
        frames.append(comparison_frame(pair, comparison))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
