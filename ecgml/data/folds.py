"""Label-stratified folds for datasets that ship none (G12EC), built once and stored beside the data.

Iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011) keeps each label's records spread
evenly over the folds, rarest label first, which matters for classes with a few dozen records
(2AVB, LPFB). Folds are stratified on every code a record carries, not on a label map's classes, so
switching label maps never changes the splits.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ecgml.io import atomic_write_json, atomic_write_text

FOLDS_FILE = "ecgml_folds.csv"
FOLDS_ALGORITHM = "iterative-stratification-v1"


def iterative_stratification(
    labels: np.ndarray,
    n_folds: int = 10,
    seed: int = 0,
    proportions: Sequence[float] | None = None,
) -> np.ndarray:
    """Assign each row of a binary ``[records, labels]`` matrix to a fold in ``1..n_folds``.

    ``proportions`` (summing to 1) asks for unequal folds, e.g. ``(0.1, 0.9)`` to draw a
    label-stratified 10% subset as fold 1.
    """
    labels = np.asarray(labels, dtype=bool)
    n = labels.shape[0]
    ratios = np.full(n_folds, 1.0 / n_folds) if proportions is None else np.asarray(proportions, dtype=float)
    if ratios.shape != (n_folds,) or np.any(ratios < 0) or not np.isclose(ratios.sum(), 1.0):
        raise ValueError(f"proportions must be {n_folds} non-negative numbers summing to 1, got {proportions}")
    rng = np.random.default_rng(seed)
    desired = ratios * n
    desired_per_label = np.outer(ratios, labels.sum(axis=0)).astype(float)  # [folds, labels]
    folds = np.zeros(n, dtype=np.int64)
    remaining = np.ones(n, dtype=bool)
    while remaining.any():
        counts = labels[remaining].sum(axis=0)
        if not counts.any():
            break
        label = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        members = np.nonzero(remaining & labels[:, label])[0]
        for record in rng.permutation(members):
            want = desired_per_label[:, label]
            best = np.flatnonzero(want == want.max())
            if best.size > 1:
                by_size = desired[best]
                best = best[by_size == by_size.max()]
            fold = int(rng.choice(best))
            folds[record] = fold + 1
            desired[fold] -= 1
            desired_per_label[fold] -= labels[record]
            remaining[record] = False
    for record in rng.permutation(np.nonzero(remaining)[0]):  # records with no label at all
        best = np.flatnonzero(desired == desired.max())
        fold = int(rng.choice(best))
        folds[record] = fold + 1
        desired[fold] -= 1
    return folds


def stratified_subset(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a label-stratified ``fraction`` of the rows: the same rows for the same seed.

    Used for the study's training-fraction sweeps; ``fraction == 1`` returns every row.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    n = len(labels)
    if fraction == 1:
        return np.arange(n)
    chosen = iterative_stratification(labels, n_folds=2, seed=seed, proportions=(fraction, 1 - fraction)) == 1
    return np.flatnonzero(chosen)


def folds_path_for(root: Path, name: str = FOLDS_FILE) -> Path:
    """Where a dataset's folds file ``name`` lives: beside the data, or in the user cache when that is
    read-only."""
    if os.access(root, os.W_OK):
        return root / name
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    suffix = "" if name == FOLDS_FILE else "-" + name.removesuffix(".csv")
    return cache_home / "ecgml" / "folds" / f"{root.name}-{tag}{suffix}.csv"


def load_or_build_folds(
    root: Path,
    record_ids: Sequence[str],
    codes: Sequence[Sequence[str]],
    *,
    n_folds: int = 10,
    seed: int = 0,
    path: Path | None = None,
    rebuild: bool = False,
    groups: Sequence[str] | None = None,
) -> tuple[dict[str, int], Path]:
    """Folds for ``record_ids``: read from the stored file, or built and stored once.

    ``groups`` (a patient id per record) keeps each patient's records in one fold: the groups are stratified
    on the union of their records' codes.

    A stored file that lacks some of the records (the tree changed) is an error, not a silent
    re-split: results computed on the old folds would no longer be comparable. ``rebuild`` replaces it.
    """
    path = path or folds_path_for(root)
    if path.is_file() and not rebuild:
        stored = pd.read_csv(path, dtype={"record_id": str, "fold": int})
        mapping = dict(zip(stored["record_id"], stored["fold"], strict=True))
        unknown = [r for r in record_ids if r not in mapping]
        if unknown:
            raise ValueError(
                f"{path}: stored folds do not cover {len(unknown)} record(s) of {root} "
                f"(e.g. {', '.join(unknown[:3])}); the tree changed since the folds were built. "
                "Rebuild them with --rebuild-folds (results on old folds stop being comparable)."
            )
        return mapping, path
    vocabulary = sorted({c for record_codes in codes for c in record_codes})
    assigned = _grouped_folds(list(record_ids), list(codes), list(groups) if groups is not None else None,
                              vocabulary, n_folds, seed)
    table = pd.DataFrame({"record_id": list(record_ids), "fold": assigned}).sort_values("record_id")
    atomic_write_text(path, table.to_csv(index=False))
    atomic_write_json(path.with_suffix(".json"), {
        "algorithm": FOLDS_ALGORITHM, "n_folds": n_folds, "seed": seed, "n_records": len(record_ids),
        "stratified_on": f"{len(vocabulary)} codes", "created": datetime.now(UTC).isoformat(),
    })
    return dict(zip(table["record_id"], table["fold"].astype(int), strict=True)), path


def _grouped_folds(record_ids: list[str], codes: list[Sequence[str]], groups: list[str] | None,
                   vocabulary: list[str], n_folds: int, seed: int) -> np.ndarray:
    """A fold per record; with ``groups``, every record of a group in its group's fold."""
    position = {c: i for i, c in enumerate(vocabulary)}
    keys = groups if groups is not None else record_ids
    units = sorted(set(keys))  # independent of directory-listing order
    unit_index = {u: i for i, u in enumerate(units)}
    matrix = np.zeros((len(units), len(vocabulary)), dtype=bool)
    for key, record_codes in zip(keys, codes, strict=True):
        matrix[unit_index[key], [position[c] for c in record_codes]] = True
    per_unit = iterative_stratification(matrix, n_folds=n_folds, seed=seed)
    return np.array([per_unit[unit_index[k]] for k in keys], dtype=np.int64)


def cv_folds(outer: np.ndarray, *, cv_fold: int) -> np.ndarray:
    """Folds 1 (train) and 3 (test) of one cross-validation fold: the records of outer fold ``cv_fold`` are the
    test split, every other record trains. The same stored outer folds give every arm the same split."""
    out = np.ones(len(outer), dtype=np.int64)
    out[outer == cv_fold] = 3
    if not (out == 1).any():
        raise ValueError(f"cross-validation fold {cv_fold} leaves no record to train on")
    return out


def read_folds_meta(path: Path) -> dict[str, object]:
    meta = path.with_suffix(".json")
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
