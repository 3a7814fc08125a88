"""Reader of the PhysioNet/CinC Challenge collections (source ``cinc``): ``*.hea`` + MATLAB v4 ``*.mat`` records
of any of the Challenge's databases, at any depth under a root.

What it reads:

- both header dialects: 2020 (first line names ``A0001.mat``, ``16+24 1000/mV``, ``#Dx:``) and 2021 (``16x1+24
  1000.0(0)/mV``, ``# Dx:``), and the stand-alone Chapman-Shaoxing/Ningbo release (``WFDBRecords/01/010/``);
- every tranche, told by the record-id prefix (:data:`TRANCHES`: ``A`` CPSC 2018, ``Q`` CPSC-extra, ``E``
  Georgia, ``JS`` Chapman-Shaoxing/Ningbo, ``S`` PTB, ``HR`` PTB-XL, ``I`` INCART), with a tranche filter;
- ``#Dx:`` as SNOMED CT codes or as the 2020 first release's abbreviations, mapped through the Challenge's
  tables (:mod:`ecgml.data.dx_mapping`);
- 257, 500 and 1000 Hz: each record keeps its own rate here; the cache resamples it to the cache rate.

Problems are collected, not raised, with counts by kind for ``ecgml data stats``: a second copy of an id
(``duplicate_record``, the copy ignored), an unreadable header, a missing signal file or ``Dx`` line, an
unknown abbreviation or code, duplicate codes, a record outside the tranche filter. NaNs and flat leads are
counted by the cache build, as for every source. The classes are the target's own codes
(:mod:`ecgml.data.label_space`); folds are label-stratified, built once and stored beside the data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ecgml.data.dx_mapping import challenge_diagnoses, dx_code
from ecgml.data.folds import FOLDS_FILE, cv_folds, folds_path_for, load_or_build_folds
from ecgml.data.formats import DataFormatError, WfdbHeader, read_header
from ecgml.data.label_space import DEFAULT_MIN_POSITIVES, select_classes
from ecgml.data.labels import OWN_TASK
from ecgml.data.records import Dataset, RecordProblem, SplitSpec, summarize_problems
from ecgml.data.sources.common import read_version


@dataclass(frozen=True)
class Tranche:
    """One database of the Challenge collections, told by its record-id prefix."""

    prefix: str
    title: str
    #: The dataset source whose records these are (``HR``: PTB-XL), so a backbone pretrained on that source is
    #: never fine-tuned or tested on them as if they were new.
    same_records_as: str | None = None


#: The tranches, longest prefix first so ``JS`` wins over ``S`` and ``HR`` is never read as another.
TRANCHES: tuple[Tranche, ...] = (
    Tranche("JS", "Chapman-Shaoxing/Ningbo"),
    Tranche("HR", "PTB-XL", same_records_as="ptbxl"),
    Tranche("A", "CPSC 2018"),
    Tranche("Q", "CPSC 2018 extra"),
    Tranche("E", "Georgia"),
    Tranche("S", "PTB"),
    Tranche("I", "St Petersburg INCART"),
)
TRANCHE_PREFIXES: tuple[str, ...] = tuple(t.prefix for t in TRANCHES)
UNKNOWN_TRANCHE = "?"
#: The Challenge's native rates: INCART 257 Hz, most 500 Hz, PTB 1000 Hz.
CINC_FS: tuple[int, ...] = (257, 500, 1000)
_ID = re.compile(r"^([A-Z]+)\d+$")


def tranche_of(record_id: str) -> str:
    """The tranche prefix of a record id (``JS00001`` -> ``JS``), or :data:`UNKNOWN_TRANCHE`."""
    match = _ID.match(record_id)
    if match:
        for prefix in TRANCHE_PREFIXES:
            if match.group(1) == prefix:
                return prefix
    return UNKNOWN_TRANCHE


def tranche_title(prefix: str) -> str:
    return next((t.title for t in TRANCHES if t.prefix == prefix), "an unknown database")


def check_tranches(tranches: Iterable[str]) -> tuple[str, ...]:
    """The filter as given, upper-cased; an unknown prefix is an error naming the known ones."""
    out = tuple(t.strip().upper() for t in tranches if t.strip())
    unknown = [t for t in out if t not in TRANCHE_PREFIXES]
    if unknown:
        raise ValueError(f"unknown tranche(s) {', '.join(unknown)}; choose from "
                         + ", ".join(f"{t.prefix} ({t.title})" for t in TRANCHES))
    return out


def header_fields(header: WfdbHeader) -> dict[str, str]:
    """``Age``, ``Sex``, ``Dx``... from comment lines, with or without a space after ``#``."""
    fields: dict[str, str] = {}
    for comment in header.comments:
        key, sep, value = comment.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def parse_dx(text: str) -> tuple[list[str], list[str]]:
    """Split a ``Dx`` value into entries in order, and the duplicates that were dropped."""
    codes: list[str] = []
    duplicates: list[str] = []
    for part in text.split(","):
        code = part.strip()
        if not code:
            continue
        (duplicates if code in codes else codes).append(code)
    return codes, duplicates


def header_dialect(header: WfdbHeader) -> str:
    """``2021`` for signal lines in the 2021 Georgia re-issue's style (``16x1+24 1000.0(0)/mV``), else ``2020``
    (``16+24 1000/mV``, which the 2021 Challenge's own training folders still use)."""
    return "2021" if any(s.baseline_written or "x" in s.fmt_text for s in header.signals) else "2020"


def _age(value: str | None) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except ValueError:
        return float("nan")


#: Decides per record whether it is read: None (yes) or the problem that leaves it out.
Admit = Callable[[str, str], RecordProblem | None]


@dataclass
class ChallengeTable:
    """What a walk over a Challenge tree found: one row per usable record and every problem met."""

    rows: list[dict[str, object]]
    problems: list[RecordProblem]
    n_headers: int


#: A record's labels from its header (path, comment fields), problems noted; None leaves the record out.
LabelReader = Callable[[Path, Mapping[str, str], list[RecordProblem]], list[str] | None]


def header_stem(header_path: Path) -> str:
    """A Challenge record's id: its header's file name without ``.hea`` (``A0001``)."""
    return header_path.stem


def dx_labels(header_path: Path, fields: Mapping[str, str], problems: list[RecordProblem]) -> list[str] | None:
    """The record's SNOMED CT codes from its ``Dx`` line (abbreviations mapped); None (a ``missing_dx`` problem)
    without one."""
    if "Dx" not in fields:
        problems.append(RecordProblem(header_path.stem, str(header_path), "missing_dx", f"{header_path}: no Dx line"))
        return None
    return _dx_codes(header_path, fields["Dx"], problems)


def walk_challenge_tree(root: Path, *, admit: Admit, source: str, progress: bool = False,
                        gain_corrections: Mapping[float, float] | None = None,
                        record_id_of: Callable[[Path], str] = header_stem,
                        labels: LabelReader = dx_labels) -> ChallengeTable:
    """Every ``*.hea`` under ``root`` (any depth, sorted) that ``admit`` lets in, as table rows with the
    record's labels (by default its ``Dx`` SNOMED CT codes, abbreviations mapped: :func:`dx_labels`), its
    tranche, rate, length and demographics. ``record_id_of`` names a record (default: the header's stem)."""
    headers = sorted(root.rglob("*.hea"))
    problems: list[RecordProblem] = []
    rows: list[dict[str, object]] = []
    seen: dict[str, str] = {}
    for header_path in tqdm(headers, desc=f"reading {source} headers", unit="rec", disable=not progress):
        record_id, where = record_id_of(header_path), str(header_path)
        if record_id in seen:  # the same id twice in one tree: labels and cache rows would be ambiguous
            problems.append(RecordProblem(record_id, where, "duplicate_record",
                                          f"{where}: record id {record_id!r} is already taken by {seen[record_id]}; "
                                          "this copy is ignored", dropped=False))  # the record stays
            continue
        seen[record_id] = where
        refused = admit(record_id, where)
        if refused is not None:
            problems.append(refused)
            continue
        header = _usable_header(header_path, problems)
        if header is None:
            continue
        fields = header_fields(header)
        codes = labels(header_path, fields, problems)
        if codes is None:
            continue
        rows.append(_record_row(header_path, record_id, header, fields, codes, source, gain_corrections or {},
                                problems))
    return ChallengeTable(rows, problems, len(headers))


def _usable_header(header_path: Path, problems: list[RecordProblem]) -> WfdbHeader | None:
    """The header, or None (with a problem) for an unreadable one or a signal file that is not beside it."""
    record_id, where = header_path.stem, str(header_path)
    try:
        header = read_header(header_path)
    except DataFormatError as exc:
        problems.append(RecordProblem(record_id, where, "bad_header", str(exc)))
        return None
    file_name = header.signals[0].file_name
    if Path(file_name).name != file_name or file_name in (".", ".."):
        problems.append(RecordProblem(record_id, where, "unsafe_path",
                                      f"{where}: signal file name {file_name!r} is a path, not a file "
                                      "beside the header; refused"))
        return None
    signal_file = header_path.parent / file_name
    if not signal_file.is_file():
        problems.append(RecordProblem(record_id, where, "missing_file",
                                      f"{signal_file}: signal file named in {where} not found"))
        return None
    return header


def _dx_codes(header_path: Path, dx: str, problems: list[RecordProblem]) -> list[str]:
    """The record's SNOMED CT codes in order (abbreviations mapped); duplicates dropped and unknown entries
    reported, both as problems that leave the record in."""
    record_id, where = header_path.stem, str(header_path)
    entries, duplicates = parse_dx(dx)
    known = challenge_diagnoses()
    codes: list[str] = []
    unknown: list[str] = []
    for entry in entries:
        code = dx_code(entry)
        if code is None:
            unknown.append(entry)
        elif code in codes:
            duplicates.append(entry)
        else:
            codes.append(code)
    foreign_codes = [c for c in codes if c not in known]
    if foreign_codes:
        problems.append(RecordProblem(record_id, where, "unknown_snomed",
                                      f"{where}: unknown SNOMED CT code(s) {', '.join(foreign_codes)} (not in the "
                                      "Challenge's tables); kept", dropped=False))
    if duplicates:
        problems.append(RecordProblem(record_id, where, "duplicate_codes",
                                      f"{where}: duplicate Dx entries {', '.join(duplicates)} dropped", dropped=False))
    if unknown:
        problems.append(RecordProblem(record_id, where, "unknown_abbreviation",
                                      f"{where}: Dx abbreviation(s) {', '.join(unknown)} are not in the "
                                      "Challenge's dx_mapping tables; ignored", dropped=False))
    return codes


def _record_row(header_path: Path, record_id: str, header: WfdbHeader, fields: Mapping[str, str], codes: list[str],
                source: str, gain_corrections: Mapping[float, float], problems: list[RecordProblem]
                ) -> dict[str, object]:
    """The table row of one record (fold 0 until the folds are assigned); a known gain defect is noted."""
    where = str(header_path)
    gains = {s.gain for s in header.signals}
    if gains & set(gain_corrections):
        problems.append(RecordProblem(record_id, where, "gain_corrected",
                                      f"{where}: declares {sorted(gains)}/mV, a known defect of the "
                                      "2020 release; read at 1000/mV", dropped=False))
    return {
        "record_id": record_id,
        "patient_id": record_id,  # the Challenge publishes no patient ids
        "path": str(header_path.with_suffix("")),
        "fs": round(header.fs),
        "n_samples": header.n_samples,
        "labels": (),
        "fold": 0,
        "source": source,
        "codes": tuple(codes),
        "tranche": tranche_of(record_id),
        "age": _age(fields.get("Age")),
        "sex": fields.get("Sex", "Unknown"),
        "header_dialect": header_dialect(header),
        "declared_gain": max(gains),
    }


def assign_folds(root: Path, table: pd.DataFrame, *, n_folds: int, seed: int, rebuild: bool,
                 stratify_on: str = "codes", folds_path: Path | None = None) -> pd.DataFrame:
    """The table with its stored (or newly built and stored) label-stratified, patient-wise folds: ten in
    ``ecgml_folds.csv``, any other number K in ``ecgml_folds_cvK.csv``, beside the data (or in the user cache
    when the tree is read-only)."""
    name = FOLDS_FILE if n_folds == 10 else f"ecgml_folds_cv{n_folds}.csv"
    folds, _ = load_or_build_folds(root, table["record_id"].tolist(), table[stratify_on].tolist(), n_folds=n_folds,
                                   seed=seed, path=folds_path or folds_path_for(root, name), rebuild=rebuild,
                                   groups=table["patient_id"].astype(str).tolist())
    return table.assign(fold=table["record_id"].map(folds).astype(int))


def read_cinc(root: str | os.PathLike[str], *, tranches: Iterable[str] = (), min_positives: int = DEFAULT_MIN_POSITIVES,
              classes: Iterable[str] = (), splits: SplitSpec | None = None, cv: int = 0, cv_fold: int = 0,
              fold_seed: int = 0, rebuild_folds: bool = False, progress: bool = False) -> Dataset:
    """Read every Challenge record under ``root`` (any depth) of the given tranches (default: all) into a
    :class:`Dataset` on the target's own classes (codes with at least ``min_positives`` positive records, or
    ``classes``). With ``cv`` = K, the folds are K stratified folds and ``cv_fold`` (1..K) picks the one tested:
    its records are the test split, the others train (:data:`CV_SPLITS`)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory; is it a folder of Challenge records?")
    wanted = check_tranches(tranches)

    def admit(record_id: str, where: str) -> RecordProblem | None:
        tranche = tranche_of(record_id)
        if wanted and tranche not in wanted:
            return RecordProblem(record_id, where, "other_tranche",
                                 f"{where}: a {tranche_title(tranche)} record, outside the tranche filter "
                                 f"{','.join(wanted)}")
        return None

    found = walk_challenge_tree(root, admit=admit, source="cinc", progress=progress)
    table = _labelled_table(root, found, wanted)
    space = select_classes(table["codes"], min_positives=min_positives, classes=tuple(classes), where=str(root))
    kept = set(space.classes)
    table["labels"] = [tuple(c for c in space.classes if c in set(codes)) for codes in table["codes"]]
    table["class_codes"] = [tuple(c for c in codes if c in kept) for codes in table["codes"]]
    n_folds = cv or 10
    if cv:
        check_cv(table, space.classes, cv, str(root))
    table = assign_folds(root, table, n_folds=n_folds, seed=fold_seed, rebuild=rebuild_folds, stratify_on="class_codes")
    if cv:
        table, splits = cv_table(table, cv=cv, cv_fold=cv_fold)
    return Dataset(source="cinc", root=root, version=read_version(root), fs=max(CINC_FS), task=OWN_TASK,
                   label_map=space.name, classes=space.classes, records=table.drop(columns=["class_codes"]),
                   problems=found.problems, splits=splits or SplitSpec(), label_space=space.to_dict())


def _labelled_table(root: Path, found: ChallengeTable, wanted: tuple[str, ...]) -> pd.DataFrame:
    if not found.rows:
        what = f" of tranche(s) {','.join(wanted)}" if wanted else ""
        raise ValueError(f"{root}: no usable Challenge record{what} among {found.n_headers} header(s)"
                         + (f" ({summarize_problems(found.problems)})" if found.problems else ""))
    table = pd.DataFrame(found.rows).sort_values("record_id", kind="stable").reset_index(drop=True)
    if not table["codes"].map(len).any():
        raise ValueError(f"{root}: none of {len(table)} record(s) carries a diagnosis the Challenge's tables "
                         f"know ({summarize_problems(found.problems)})")
    return table


def check_cv(table: pd.DataFrame, classes: tuple[str, ...], cv: int, where: str) -> None:
    """Refuse a K-fold split the rarest class cannot fill: every test fold must see each class once."""
    if cv < 2:
        raise ValueError(f"--cv must be at least 2 folds, not {cv}")
    counts = {c: int(sum(c in labels for labels in table["labels"])) for c in classes}
    short = {c: n for c, n in counts.items() if n < cv}
    if short:
        listed = ", ".join(f"{c} ({n})" for c, n in sorted(short.items(), key=lambda kv: kv[1]))
        raise ValueError(f"{where}: --cv {cv} needs at least {cv} positive records of every class, but "
                         f"{listed} have fewer; lower --cv or raise --min-positives to {cv} or more")


#: The folds of one cross-validation fold's records: 1 trains, 3 is tested. Its validation split is the test
#: fold, shown per epoch but never used to pick the epoch (a cross-validated run keeps its last epoch): a
#: small target cannot spare a validation split big enough to pick one.
CV_SPLITS = SplitSpec(train=(1,), val=(3,), test=(3,))


def cv_table(table: pd.DataFrame, *, cv: int, cv_fold: int) -> tuple[pd.DataFrame, SplitSpec]:
    """The table of one cross-validation fold: its records fold 3 (test), the others fold 1 (training); the
    stored outer fold stays in ``cv_outer_fold``."""
    if not 1 <= cv_fold <= cv:
        raise ValueError(f"cross-validation fold {cv_fold} is not one of 1..{cv}")
    folds = cv_folds(table["fold"].to_numpy(), cv_fold=cv_fold)
    return table.assign(cv_outer_fold=table["fold"], fold=folds), CV_SPLITS
