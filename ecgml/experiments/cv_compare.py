"""Two cross-validations on the same folds compared fold by fold: fine-tuned against standalone, say, or against
the backbone as it is (a zero-shot evaluation of every record, scored on the cross-validation's folds).

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
    #: What the reader must know about the comparison (classes left out of it).
    notes: tuple[str, ...] = ()

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
                f"{int((folds['significance'] == 'below').sum())}/{len(folds)}"
                + "".join(f"; {note}" for note in self.notes))

    def markdown(self) -> str:
        """The table as Markdown, as the report prints paired tests."""
        from ecgml.experiments.analysis import fmt
        from ecgml.experiments.report_sections import markdown_table, p_value

        rows = [[r.fold, int(r.n_records), fmt(r.auc_a), fmt(r.auc_b), fmt(r.diff, sign=True),
                 f"[{fmt(r.low, sign=True)}, {fmt(r.high, sign=True)}]", p_value(r.p_value), r.significance]
                for r in self.table.itertuples(index=False)]
        return markdown_table(["fold", "records", f"AUC {self.names[0]}", f"AUC {self.names[1]}", "A − B", "95% CI",
                               "p", "CI vs 0"], rows)


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


@dataclass(frozen=True)
class _Side:
    """One side of a comparison: its predictions, its name, its K (None: a zero-shot evaluation, no folds)."""

    frame: pd.DataFrame
    name: str
    k: int | None


def _side(client: Any, run_id: str, folder: Path) -> _Side:
    """A cross-validation parent's out-of-fold predictions, or a zero-shot evaluation's predictions of every record
    (``--split all``); any other run is refused."""
    from mlflow.exceptions import MlflowException

    from ecgml.posttrain.evaluate import ZERO_SHOT_TAG

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise CvCompareError(f"no run {run_id!r} in the tracking store ({str(exc).splitlines()[0]})") from None
    name = run.data.tags.get("mlflow.runName", run_id)
    k = run.data.tags.get(CV_TAG)
    zero_shot = run.data.tags.get(ZERO_SHOT_TAG) == "true"
    if zero_shot and run.data.params.get("split") != "all":
        raise CvCompareError(f"run {run_id} ({name}) is a zero-shot evaluation of split "
                             f"{run.data.params.get('split')!r}: compare one of every record (--split all)")
    if not k and not zero_shot:
        raise CvCompareError(f"run {run_id} ({name}) is not a cross-validation parent run (no tag {CV_TAG}): "
                             "give the run: <id> that finetune or train-standalone --cv K printed, or a zero-shot "
                             "evaluation (evaluate --zero-shot --split all)")
    artifact = "eval/predictions_all.csv" if zero_shot else OOF_FILE
    folder.mkdir(parents=True, exist_ok=True)
    try:
        local = client.download_artifacts(run_id, artifact, str(folder))
    except (MlflowException, OSError) as exc:
        raise CvCompareError(f"run {run_id} ({name}) has no {artifact} ({type(exc).__name__}); did it finish?"
                             ) from None
    return _Side(pd.read_csv(local, dtype={"record_id": str}), name, int(k) if k else None)


def _classes(frame: pd.DataFrame) -> list[str]:
    return [c.removeprefix("prob_") for c in frame.columns if c.startswith("prob_")]


def _restrict(frame: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    keep = [c for c in frame.columns if not c.startswith(("true_", "prob_"))
            or c.removeprefix("true_").removeprefix("prob_") in classes]
    return frame[keep]


def compare_cv_runs(run_a: str, run_b: str, *, n_rounds: int = 1000, seed: int = 0,
                    names: tuple[str, str] | None = None) -> CvComparison:
    """Fold-by-fold comparison of two runs of the tracking store (A minus B): two cross-validation parents on the
    same folds, or one and a zero-shot evaluation of every record (what fine-tuning adds over the backbone as it
    is), scored on the cross-validation's folds and on the classes the zero-shot run could score. ``names``: what
    the table calls A and B (default: the runs' names)."""
    import tempfile

    from ecgml.tracking.store import tracking_client

    client = tracking_client()
    with tempfile.TemporaryDirectory() as tmp:
        a, b = _side(client, run_a, Path(tmp) / "a"), _side(client, run_b, Path(tmp) / "b")
    if a.k is None and b.k is None:
        raise CvCompareError(f"runs {run_a} and {run_b} are both zero-shot evaluations: give at least one "
                             "cross-validation parent run, whose folds the comparison uses")
    if a.k is not None and b.k is not None and a.k != b.k:
        raise CvCompareError(f"run {run_a} ({a.name}) has {a.k} folds, run {run_b} ({b.name}) {b.k}: compare "
                             "cross-validations with the same --cv K")
    notes: list[str] = []
    frames = [a.frame, b.frame]
    if a.k is None or b.k is None:
        cv, zero = (0, 1) if a.k is not None else (1, 0)
        folds = frames[cv].set_index("record_id")["fold"]
        frames[zero] = frames[zero].assign(fold=frames[zero]["record_id"].map(folds))
        if frames[zero]["fold"].isna().any():
            extra = frames[zero].loc[frames[zero]["fold"].isna(), "record_id"].tolist()
            raise CvCompareError(f"{len(extra)} record(s) of the zero-shot run (e.g. {', '.join(extra[:3])}) are not "
                                 "in the cross-validation: read the same data with the same label space")
        frames[zero]["fold"] = frames[zero]["fold"].astype(int)
        common = [c for c in _classes(frames[cv]) if c in set(_classes(frames[zero]))]
        dropped = [c for c in _classes(frames[cv]) if c not in common]
        if dropped:
            notes.append(f"compared on the {len(common)} class(es) the zero-shot run scores; left out: "
                         f"{', '.join(dropped)}")
        frames = [_restrict(f, common) for f in frames]
    out = compare_oof(frames[0], frames[1], names=names or (a.name, b.name), n_rounds=n_rounds, seed=seed)
    return CvComparison(out.names, out.table, tuple(notes))


__all__ = ["CvCompareError", "CvComparison", "compare_cv_runs", "compare_oof"]
