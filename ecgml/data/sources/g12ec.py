"""Reader of the Georgia 12-lead ECG Challenge database (G12EC): ``E*.hea`` + MATLAB v4 ``E*.mat``.

Both header dialects are read: the 2020 release (first line names ``E00009.mat``, ``16+24``, comment
lines ``#Dx:``, some headers declaring 4880/mV over data stored at 1000/mV) and the 2021 release
(``E07500``, ``16x1+24 1000.0(0)/mV``, ``# Dx:``). The Challenge bundles other databases beside
Georgia; their ids (``HR`` = PTB-XL, ``A``/``Q`` = CPSC, ``S`` = PTB, ``I`` = St Petersburg, ``JS`` =
Chapman-Shaoxing/Ningbo) are refused unless asked for, so PTB-XL can never leak into fine-tuning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ecgml.data.folds import load_or_build_folds
from ecgml.data.formats import DataFormatError, WfdbHeader, read_header
from ecgml.data.labels import DEFAULT_LABEL_MAP, load_label_map, snomed_vocabulary
from ecgml.data.records import Dataset, RecordProblem, SplitSpec, summarize_problems
from ecgml.data.sources.common import read_version

G12EC_FS = 500
#: The 2020 Georgia release declares this gain in some headers; the data are stored at 1000/mV.
G12EC_GAIN_CORRECTIONS: dict[float, float] = {4880.0: 1000.0}
_GEORGIA_ID = re.compile(r"^E\d+$")
#: Record-id prefixes of the other Challenge databases, longest first so "JS" wins over "S".
FOREIGN_PREFIXES: dict[str, str] = {
    "JS": "Chapman-Shaoxing/Ningbo",
    "HR": "PTB-XL",
    "A": "CPSC 2018",
    "Q": "CPSC 2018 extra",
    "S": "PTB",
    "I": "St Petersburg INCART",
}


UNKNOWN_DATABASE = "an unknown database"


def foreign_database(record_id: str) -> str | None:
    """Name of the non-Georgia database a record id belongs to, or None for a Georgia id."""
    if _GEORGIA_ID.match(record_id):
        return None
    for prefix, name in FOREIGN_PREFIXES.items():
        if record_id.startswith(prefix):
            return name
    return UNKNOWN_DATABASE


def foreign_refusal(where: str, record_id: str, database: str) -> str:
    """Why a foreign record is left out. No hint how to let it in: only some commands can (the CLI's data
    commands say their ``--allow-foreign`` flag themselves)."""
    what = f"a record of {database}" if database == UNKNOWN_DATABASE else f"a {database} record"
    return f"{where}: id {record_id!r} is {what}, not Georgia; refused"


def header_fields(header: WfdbHeader) -> dict[str, str]:
    """``Age``, ``Sex``, ``Dx``... from comment lines, with or without a space after ``#``."""
    fields: dict[str, str] = {}
    for comment in header.comments:
        key, sep, value = comment.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def parse_dx(text: str) -> tuple[list[str], list[str]]:
    """Split a ``Dx`` value into codes in order, and the duplicates that were dropped."""
    codes: list[str] = []
    duplicates: list[str] = []
    for part in text.split(","):
        code = part.strip()
        if not code:
            continue
        (duplicates if code in codes else codes).append(code)
    return codes, duplicates


def _age(value: str | None) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except ValueError:
        return float("nan")


def read_g12ec(
    root: str | os.PathLike[str],
    *,
    label_map: str = DEFAULT_LABEL_MAP,
    splits: SplitSpec | None = None,
    allow_foreign: bool = False,
    folds_path: Path | None = None,
    fold_seed: int = 0,
    rebuild_folds: bool = False,
    progress: bool = False,
) -> Dataset:
    """Read every ``*.hea`` under ``root`` (any depth) into a :class:`Dataset` on the shared classes.

    Problems are collected, not raised: a foreign or unreadable record, a missing signal file or a
    missing ``Dx`` line drops the record; duplicate and unknown SNOMED codes are reported and the record
    kept. Folds are built once (label-stratified, ``fold_seed``) and stored beside the data.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory; is it a G12EC tree?")
    lmap = load_label_map(label_map)
    vocabulary = snomed_vocabulary()
    headers = sorted(root.rglob("*.hea"))
    problems: list[RecordProblem] = []
    rows: list[dict[str, object]] = []
    seen: dict[str, str] = {}
    for header_path in tqdm(headers, desc="reading G12EC headers", unit="rec", disable=not progress):
        found = _usable_header(header_path, seen, allow_foreign, problems)
        if found is None:
            continue
        header, foreign = found
        fields = header_fields(header)
        if "Dx" not in fields:
            problems.append(RecordProblem(header_path.stem, str(header_path), "missing_dx",
                                          f"{header_path}: no Dx line"))
            continue
        codes = _dx_codes(header_path, fields["Dx"], vocabulary, problems)
        labels = lmap.from_snomed(c for c in codes if c in vocabulary)
        rows.append(_record_row(header_path, header, fields, codes, foreign, labels, problems))
    if not rows:
        raise ValueError(f"{root}: no usable G12EC record among {len(headers)} header(s)"
                         + (f" ({summarize_problems(problems)})" if problems else ""))
    table = pd.DataFrame(rows).sort_values("record_id", kind="stable").reset_index(drop=True)
    folds, _ = load_or_build_folds(
        root, table["record_id"].tolist(), table["codes"].tolist(), seed=fold_seed, path=folds_path,
        rebuild=rebuild_folds,
    )
    table["fold"] = table["record_id"].map(folds).astype(int)
    return Dataset(
        source="g12ec",
        root=root,
        version=read_version(root),
        fs=G12EC_FS,
        task="shared18",
        label_map=label_map,
        classes=lmap.classes,
        records=table,
        problems=problems,
        splits=splits or SplitSpec(),
        gain_corrections=dict(G12EC_GAIN_CORRECTIONS),
    )


def _usable_header(header_path: Path, seen: dict[str, str], allow_foreign: bool,
                   problems: list[RecordProblem]) -> tuple[WfdbHeader, str | None] | None:
    """The header of a record that may be read and its foreign database (None: Georgia), or None (with a
    problem) for a second copy of an id, a refused foreign record, an unreadable header or a signal file
    that is not a file beside the header."""
    record_id = header_path.stem
    where = str(header_path)
    if record_id in seen:  # the same id twice in one tree: labels and cache rows would be ambiguous
        problems.append(RecordProblem(record_id, where, "duplicate_record",
                                      f"{where}: record id {record_id!r} is already taken by {seen[record_id]}; "
                                      "this copy is ignored", dropped=False))  # the record stays
        return None
    seen[record_id] = where
    foreign = foreign_database(record_id)
    if foreign and not allow_foreign:
        problems.append(RecordProblem(record_id, where, "foreign_record", foreign_refusal(where, record_id, foreign)))
        return None
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
    return header, foreign


def _dx_codes(header_path: Path, dx: str, vocabulary: Mapping[str, object],
              problems: list[RecordProblem]) -> list[str]:
    """The record's SNOMED codes in order; duplicates are dropped and unknown codes reported (both kept as
    problems that leave the record in)."""
    record_id, where = header_path.stem, str(header_path)
    codes, duplicates = parse_dx(dx)
    if duplicates:
        problems.append(RecordProblem(record_id, where, "duplicate_codes",
                                      f"{where}: duplicate Dx code(s) {', '.join(duplicates)} dropped",
                                      dropped=False))
    unknown = [c for c in codes if c not in vocabulary]
    if unknown:
        problems.append(RecordProblem(record_id, where, "unknown_snomed",
                                      f"{where}: unknown SNOMED CT code(s) {', '.join(unknown)} "
                                      "ignored", dropped=False))
    return codes


def _record_row(header_path: Path, header: WfdbHeader, fields: Mapping[str, str], codes: list[str],
                foreign: str | None, labels: tuple[str, ...], problems: list[RecordProblem]) -> dict[str, object]:
    """The table row of one record (fold 0 until the folds are assigned); a known gain defect is noted."""
    record_id, where = header_path.stem, str(header_path)
    gains = {s.gain for s in header.signals}
    if gains & set(G12EC_GAIN_CORRECTIONS):
        problems.append(RecordProblem(record_id, where, "gain_corrected",
                                      f"{where}: declares {sorted(gains)}/mV, a known defect of the "
                                      "2020 release; read at 1000/mV", dropped=False))
    return {
        "record_id": record_id,
        "patient_id": record_id,  # G12EC publishes no patient ids
        "path": str(header_path.with_suffix("")),
        "fs": int(header.fs),
        "n_samples": header.n_samples,
        "labels": labels,
        "fold": 0,
        "source": "g12ec" if foreign is None else f"foreign:{foreign}",
        "codes": tuple(codes),
        "age": _age(fields.get("Age")),
        "sex": fields.get("Sex", "Unknown"),
        "header_dialect": "2020" if header.record_name.endswith(".mat") else "2021",
        "declared_gain": max(gains),
    }
