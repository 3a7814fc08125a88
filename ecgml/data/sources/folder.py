"""Reader of a user's own labelled folder (source ``folder``): WFDB (``.hea`` + ``.dat``) or Challenge (``.hea`` +
``.mat``) records anywhere under a root, labelled by their headers or by a ``labels.csv`` at the root.

Records are found by the Challenge reader's walk (:func:`ecgml.data.sources.cinc.walk_challenge_tree`); a record's
id is its path under the root without the extension (``ward3/patient12/rec01``), so records of one name in two
sub-folders stay apart. Labels, first match wins:

1. ``labels.csv`` at the root: columns ``record`` (the id, or the file's base name when that is unique),
   ``labels`` (labels separated by ``;`` or ``,``), optionally ``patient`` (records of one patient always share a
   fold). Every row must name a record under the root; a record it does not list is left out (counted).
2. A ``# Labels: A,B`` comment in the header: the user's own labels, taken as written.
3. A ``#Dx:`` line, read as the Challenge reads it (SNOMED CT codes, or abbreviations mapped to codes).

The classes are the target's own labels (:mod:`ecgml.data.label_space`: every label with ``--min-positives``
positive records, or ``--classes``), as for ``cinc``; folds are label-stratified (patient-wise with a
``patient`` column), built once and stored beside the data. Each record keeps its own rate: the cache resamples
it to the cache rate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ecgml.data.label_space import DEFAULT_MIN_POSITIVES, select_classes
from ecgml.data.labels import OWN_TASK
from ecgml.data.records import Dataset, RecordProblem, SplitSpec, summarize_problems
from ecgml.data.sources.cinc import assign_folds, check_cv, cv_table, dx_labels, walk_challenge_tree
from ecgml.data.sources.common import read_version

LABELS_CSV = "labels.csv"
#: The header comment that holds a record's own labels (``# Labels: AF,my-class``).
LABELS_FIELD = "Labels"
#: The rate the table names; each record is read at its own rate and resampled by the cache.
FOLDER_FS = 500
_SEPARATORS = (";", ",")
_SUFFIXES = (".hea", ".dat", ".mat")
#: How many missing ids an error lists.
_SHOWN = 5


def split_labels(text: str) -> tuple[str, ...]:
    """``"AF; RBBB"`` or ``"AF,RBBB"`` -> ``("AF", "RBBB")``: stripped, empty parts and repeats dropped."""
    for separator in _SEPARATORS[1:]:
        text = text.replace(separator, _SEPARATORS[0])
    return tuple(dict.fromkeys(part.strip() for part in text.split(_SEPARATORS[0]) if part.strip()))


@dataclass(frozen=True)
class CsvLabels:
    """What ``labels.csv`` says about each record it names."""

    path: Path
    labels: dict[str, tuple[str, ...]]
    patients: dict[str, str]


def _strip_suffix(name: str) -> str:
    """A ``record`` cell as an id: stripped, ``/`` separators, no leading ``./``, no file extension."""
    name = name.strip().replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_labels_csv(path: Path) -> CsvLabels:
    """Parse ``labels.csv``: refuse missing columns and a record named twice, naming the file."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: cannot be read as CSV ({exc})") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("record", "labels") if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: needs columns record and labels (optional: patient); it has "
                         f"{', '.join(table.columns) or 'none'}")
    ids = [_strip_suffix(r) for r in table["record"]]
    twice = sorted({r for r in ids if ids.count(r) > 1})
    if twice:
        raise ValueError(f"{path}: record(s) {', '.join(twice[:_SHOWN])} are listed more than once")
    if "" in ids:
        raise ValueError(f"{path}: row {ids.index('') + 2} names no record")
    labels = {rid: split_labels(text) for rid, text in zip(ids, table["labels"], strict=True)}
    patients = ({rid: p.strip() for rid, p in zip(ids, table["patient"], strict=True) if p.strip()}
                if "patient" in table.columns else {})
    return CsvLabels(path, labels, patients)


def _relative_id(root: Path) -> Callable[[Path], str]:
    """A record's id under ``root``: its header's path there without ``.hea`` (``ward3/rec01``)."""
    def record_id(header_path: Path) -> str:
        return header_path.relative_to(root).with_suffix("").as_posix()
    return record_id


def header_labels(header_path: Path, fields: Mapping[str, str], problems: list[RecordProblem]) -> list[str]:
    """A record's labels from its header: ``# Labels:`` as written, else ``#Dx:`` as the Challenge reads it, else
    none (the record is counted as unlabelled later)."""
    if LABELS_FIELD in fields:
        return list(split_labels(fields[LABELS_FIELD]))
    if "Dx" in fields:
        return dx_labels(header_path, fields, problems) or []
    return []


def _no_labels(header_path: Path, fields: Mapping[str, str], problems: list[RecordProblem]) -> list[str]:
    return []  # labels.csv decides


def _apply_csv(table: pd.DataFrame, csv: CsvLabels, root: Path) -> pd.DataFrame:
    """The records' labels and patients from ``labels.csv``, matched by id or by a unique base name; a row that
    names no record under ``root`` is an error listing the first few."""
    by_id = {rid: rid for rid in table["record_id"]}
    names: dict[str, list[str]] = {}
    for rid in table["record_id"]:
        names.setdefault(rid.rsplit("/", 1)[-1], []).append(rid)
    matched: dict[str, str] = {}
    missing: list[str] = []
    ambiguous: list[str] = []
    for key in csv.labels:
        if key in by_id:
            record = by_id[key]
        elif len(names.get(key, ())) == 1:
            record = names[key][0]
        else:
            (ambiguous if key in names else missing).append(key)
            continue
        if record in matched:
            raise ValueError(f"{csv.path}: rows {matched[record]!r} and {key!r} both name record {record}; "
                             "list each record once")
        matched[record] = key
    if ambiguous:
        raise ValueError(f"{csv.path}: record name(s) {', '.join(ambiguous[:_SHOWN])} match several records under "
                         f"{root} (e.g. {', '.join(names[ambiguous[0]][:2])}); name them by their path there")
    if missing:
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        raise ValueError(f"{csv.path}: {len(missing)} record(s) it names are not under {root} (no .hea found): "
                         f"{', '.join(missing[:_SHOWN])}{more}")
    keys = table["record_id"].map(matched)
    table = table.assign(codes=[csv.labels[k] if isinstance(k, str) else () for k in keys])
    patients = [csv.patients.get(k, rid) if isinstance(k, str) else rid
                for k, rid in zip(keys, table["record_id"], strict=True)]
    return table.assign(patient_id=patients)


def _labelled(table: pd.DataFrame, root: Path, csv: CsvLabels | None,
              problems: list[RecordProblem]) -> pd.DataFrame:
    """Only the records with labels; the others counted (``no_labels``); none at all is an error saying where
    labels go."""
    has = table["codes"].map(len) > 0
    for rec in table.loc[~has, ["record_id", "path"]].itertuples():
        where = f"{rec.path}.hea"
        why = f"not listed in {csv.path}" if csv else f"no '# {LABELS_FIELD}:' or '#Dx:' line"
        problems.append(RecordProblem(rec.record_id, where, "no_labels", f"{where}: {why}; left out"))
    if not has.any():
        where = (f"{csv.path} lists none of them" if csv else
                 f"no header has a '# {LABELS_FIELD}: A,B' or '#Dx:' line, and there is no {root / LABELS_CSV}")
        raise ValueError(f"{root}: none of the {len(table)} record(s) has a label: {where}. Label them in their "
                         f"headers or in {LABELS_CSV} (columns record, labels[, patient])")
    return table.loc[has].reset_index(drop=True)


def read_folder(root: str | os.PathLike[str], *, min_positives: int = DEFAULT_MIN_POSITIVES,
                classes: Iterable[str] = (), splits: SplitSpec | None = None, cv: int = 0, cv_fold: int = 0,
                fold_seed: int = 0, rebuild_folds: bool = False, tranches: Iterable[str] = (),
                progress: bool = False) -> Dataset:
    """Read every record under ``root`` into a :class:`Dataset` on its own labels (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory; give the folder that holds your records")
    if tuple(tranches):
        raise ValueError("--tranche picks Challenge databases by record-id prefix; a folder source has none")
    csv = read_labels_csv(root / LABELS_CSV) if (root / LABELS_CSV).is_file() else None
    found = walk_challenge_tree(root, admit=lambda record_id, where: None, source="folder", progress=progress,
                                record_id_of=_relative_id(root), labels=_no_labels if csv else header_labels)
    if not found.rows:
        raise ValueError(f"{root}: no readable WFDB or Challenge record (a .hea beside its .dat or .mat) among "
                         f"{found.n_headers} header(s)"
                         + (f" ({summarize_problems(found.problems)})" if found.problems else ""))
    table = pd.DataFrame(found.rows).sort_values("record_id", kind="stable").reset_index(drop=True)
    table["codes"] = table["codes"].map(tuple)
    problems = list(found.problems)
    if csv is not None:
        table = _apply_csv(table, csv, root)
    table = _labelled(table, root, csv, problems)
    space = select_classes(table["codes"], min_positives=min_positives, classes=tuple(classes), where=str(root))
    kept = set(space.classes)
    table["labels"] = [tuple(c for c in space.classes if c in set(codes)) for codes in table["codes"]]
    table["class_codes"] = [tuple(c for c in codes if c in kept) for codes in table["codes"]]
    if cv:
        check_cv(table, space.classes, cv, str(root))
    table = assign_folds(root, table, n_folds=cv or 10, seed=fold_seed, rebuild=rebuild_folds,
                         stratify_on="class_codes")
    if cv:
        table, splits = cv_table(table, cv=cv, cv_fold=cv_fold)
    return Dataset(source="folder", root=root, version=read_version(root), fs=FOLDER_FS, task=OWN_TASK,
                   label_map=space.name, classes=space.classes, records=table.drop(columns=["class_codes"]),
                   problems=problems, splits=splits or SplitSpec(), label_space=space.to_dict())
