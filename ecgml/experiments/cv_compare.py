"""Two cross-validations on the same folds compared fold by fold: fine-tuned against standalone, say.

Both arms of ``--cv K`` read the target's stored K folds, so every record is tested once by each, in the same fold.
Each fold is a paired comparison on the same records (:func:`ecgml.evaluate.paired.paired_bootstrap_auc_diff`,
records resampled jointly) with the report's one significance rule (:func:`ecgml.evaluate.paired.significance`);
the pooled row pairs the two out-of-fold prediction sets over every record. The input is each parent run's
``oof_predictions.csv`` (:mod:`ecgml.experiments.crossval`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ecgml.evaluate.paired import align_predictions, macro_auc_on, paired_bootstrap_auc_diff, significance
from ecgml.experiments.crossval import CV_TAG, OOF_FILE

#: The table's columns, one row per fold and a last row ``fold = pooled``.
COLUMNS = ("fold", "n_records", "auc_a", "auc_b", "diff", "low", "high", "p_value", "significance")
POOLED = "pooled"


class CvCompareError(ValueError):
    """The two runs cannot be compared fold by fold; the message says why."""


@dataclass(frozen=True)
class CvComparison:
    """Fold-by-fold and pooled paired differences of macro AUC, A minus B."""

    names: tuple[str, str]
    table: pd.DataFrame

    @property
    def folds(self) -> pd.DataFrame:
        return self.table[self.table["fold"] != POOLED]

    @property
    def pooled(self) -> pd.Series:
        return self.table[self.table["fold"] == POOLED].iloc[0]

    def summary(self) -> str:
        """One sentence: the pooled difference and its reading, and how many folds agree."""
        from ecgml.experiments.analysis import fmt

        r, folds = self.pooled, self.folds
        diffs = folds["diff"].to_numpy(dtype=float)
        reading = {"above": "significant gain", "below": "significant loss",
                   "includes": "not significant (CI includes 0)"}.get(str(r["significance"]), "n/a")
        return (f"{self.names[0]} − {self.names[1]}: pooled out-of-fold macro AUC {fmt(r['auc_a'])} vs "
                f"{fmt(r['auc_b'])}, {fmt(r['diff'], sign=True)} [{fmt(r['low'], sign=True)}, "
                f"{fmt(r['high'], sign=True)}], p {fmt(r['p_value'])}: {reading}; ahead in "
                f"{int((diffs > 0).sum())}/{len(folds)} folds, paired 95% CI above 0 in "
                f"{int((folds['significance'] == 'above').sum())}/{len(folds)} and below 0 in "
                f"{int((folds['significance'] == 'below').sum())}/{len(folds)}")

    def markdown(self) -> str:
        """The table as Markdown, as the report prints paired tests."""
        from ecgml.experiments.analysis import fmt
        from ecgml.experiments.report_sections import markdown_table, p_value

        rows = [[r.fold, int(r.n_records), f"{fmt(r.auc_a)} vs {fmt(r.auc_b)}", fmt(r.diff, sign=True),
                 f"[{fmt(r.low, sign=True)}, {fmt(r.high, sign=True)}]", p_value(r.p_value), r.significance]
                for r in self.table.itertuples(index=False)]
        return markdown_table(["fold", "records", f"AUC {self.names[0]} vs {self.names[1]}", "A − B", "95% CI", "p",
                               "CI vs 0"], rows)


def _check_folds(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]) -> None:
    """The same record in the same fold in both, else the comparison would not be paired fold by fold."""
    for frame, name in ((a, names[0]), (b, names[1])):
        missing = {"record_id", "fold"} - set(frame.columns)
        if missing:
            raise CvCompareError(f"{OOF_FILE} of {name} lacks column(s) {', '.join(sorted(missing))}")
    folds = a.set_index(a["record_id"].astype(str))["fold"].astype(int).to_dict()
    other = b.set_index(b["record_id"].astype(str))["fold"].astype(int).to_dict()
    moved = sorted(r for r in set(folds) & set(other) if folds[r] != other[r])
    if moved:
        raise CvCompareError(f"{names[0]} and {names[1]} put {len(moved)} record(s) in other folds (e.g. "
                             f"{', '.join(moved[:3])}): they were not cross-validated on the same folds (same data, "
                             "--cv K and fold seed)")


def compare_oof(a: pd.DataFrame, b: pd.DataFrame, *, names: tuple[str, str] = ("A", "B"), n_rounds: int = 1000,
                seed: int = 0) -> CvComparison:
    """Paired macro AUC differences of two out-of-fold prediction sets (``record_id``, ``fold``, ``true_<c>``,
    ``prob_<c>``), per fold and pooled; raises :class:`CvCompareError` or
    :class:`~ecgml.evaluate.paired.AlignmentError` when they are not the same records, classes and folds."""
    _check_folds(a, b, names)
    align_predictions(a, b, names=names)  # the same records, classes and labels over all folds
    rows: list[dict[str, Any]] = []
    parts = [(int(f), a[a["fold"] == f], b[b["fold"] == f]) for f in sorted(a["fold"].unique())]
    for fold, fa, fb in [*parts, (POOLED, a, b)]:
        pair = align_predictions(fa, fb, names=names)
        out = paired_bootstrap_auc_diff(pair.y_true, pair.prob_a, pair.prob_b, n_rounds=n_rounds, seed=seed)
        rows.append({"fold": fold, "n_records": len(pair.record_ids),
                     "auc_a": macro_auc_on(pair.y_true, pair.prob_a), "auc_b": macro_auc_on(pair.y_true, pair.prob_b),
                     "diff": out["estimate"], "low": out["low"], "high": out["high"], "p_value": out["p_value"],
                     "significance": significance(out["low"], out["high"], out["p_value"], level=out["level"])})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["fold"] = table["fold"].astype(str)
    return CvComparison(names, table)


def _oof_of_run(client: Any, run_id: str, folder: Path) -> tuple[pd.DataFrame, str, int]:
    """A cross-validation parent's out-of-fold predictions, its name and its K; a run that is not one is refused."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise CvCompareError(f"no run {run_id!r} in the tracking store ({str(exc).splitlines()[0]})") from None
    name = run.data.tags.get("mlflow.runName", run_id)
    k = run.data.tags.get(CV_TAG)
    if not k:
        raise CvCompareError(f"run {run_id} ({name}) is not a cross-validation parent run (no tag {CV_TAG}): "
                             "give the run: <id> that finetune or train-standalone --cv K printed")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        local = client.download_artifacts(run_id, OOF_FILE, str(folder))
    except (MlflowException, OSError) as exc:
        raise CvCompareError(f"run {run_id} ({name}) has no {OOF_FILE} ({type(exc).__name__}); did it finish?"
                             ) from None
    return pd.read_csv(local, dtype={"record_id": str}), name, int(k)


def compare_cv_runs(run_a: str, run_b: str, *, n_rounds: int = 1000, seed: int = 0) -> CvComparison:
    """Fold-by-fold comparison of two cross-validation parent runs of the tracking store (A minus B)."""
    import tempfile

    from ecgml.tracking.store import tracking_client

    client = tracking_client()
    with tempfile.TemporaryDirectory() as tmp:
        a, name_a, k_a = _oof_of_run(client, run_a, Path(tmp) / "a")
        b, name_b, k_b = _oof_of_run(client, run_b, Path(tmp) / "b")
    if k_a != k_b:
        raise CvCompareError(f"run {run_a} ({name_a}) has {k_a} folds, run {run_b} ({name_b}) {k_b}: compare "
                             "cross-validations with the same --cv K")
    return compare_oof(a, b, names=(name_a, name_b), n_rounds=n_rounds, seed=seed)


__all__ = ["CvCompareError", "CvComparison", "compare_cv_runs", "compare_oof"]
