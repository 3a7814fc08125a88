"""Reader of a PTB-XL tree: ``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/``, ``records500/``.

The table comes from the metadata alone (fast: no signal is opened); each record's files are checked
for existence so that a table from one release over a signal tree of another (v1.0.1 has 21,837
records, v1.0.3 21,799) reports the records it cannot find instead of failing later.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from ecgml.data.labels import DEFAULT_LABEL_MAP, PTBXL_TASKS, SHARED_TASK, LabelMap, ScpStatements, load_label_map
from ecgml.data.records import Dataset, RecordProblem, SplitSpec, summarize_problems
from ecgml.data.sources.common import read_version

PTBXL_FS = (100, 500)
#: Every PTB-XL record is ten seconds long.
PTBXL_SECONDS = 10
_FILENAME_COLUMN = {100: "filename_lr", 500: "filename_hr"}
REQUIRED_COLUMNS = ("ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr")
#: Metadata columns carried into the records table.
METADATA_COLUMNS = (
    "age", "sex", "height", "weight", "device", "recording_date", "heart_axis",
    "validated_by_human", "second_opinion", "baseline_drift", "static_noise", "burst_noise",
    "electrodes_problems", "extra_beats", "pacemaker",
)


class ScpCodesError(ValueError):
    """An ``scp_codes`` entry that is not a dict of statement -> numeric likelihood."""


def parse_scp_codes(text: str) -> dict[str, float]:
    """Parse ``"{'NORM': 100.0, 'SR': 0.0}"`` safely (a literal, never ``eval``)."""
    try:
        value = ast.literal_eval(text) if isinstance(text, str) else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ScpCodesError(f"scp_codes {text!r} is not a dict literal") from None
    if not isinstance(value, dict):
        raise ScpCodesError(f"scp_codes {text!r} is not a dict of statement -> likelihood")
    out: dict[str, float] = {}
    for key, likelihood in value.items():
        if not isinstance(key, str) or isinstance(likelihood, bool) or not isinstance(
            likelihood, int | float
        ):
            raise ScpCodesError(f"scp_codes entry {key!r}: {likelihood!r} is not statement -> number")
        out[key] = float(likelihood)
    return out


def unsafe_relative_path(value: object) -> str | None:
    """Why a file name from the metadata may not be joined to the dataset root, or None when it may.

    A table is data, not code: a ``..`` component or an absolute path would read files outside the tree.
    """
    if not isinstance(value, str) or not value.strip():
        return "is empty"
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if value.startswith(("/", "\\")) or (parts and ":" in parts[0]):
        return "is an absolute path"
    if ".." in parts:
        return "leaves the dataset folder (a '..' component)"
    return None


def read_ptbxl(
    root: str | os.PathLike[str],
    *,
    fs: int = 100,
    task: str = "superdiagnostic",
    label_map: str = DEFAULT_LABEL_MAP,
    splits: SplitSpec | None = None,
    check_files: bool = True,
) -> Dataset:
    """Read a PTB-XL tree into a :class:`Dataset` for one sampling rate and label task.

    Records whose ``scp_codes`` cannot be parsed, or whose signal files are missing (when
    ``check_files``), are left out and listed in ``Dataset.problems``. Records with no label in the task
    stay in the table (``Dataset.labelled()`` drops them), so one signal cache serves every task.
    """
    root = Path(root)
    _check_rate_and_task(fs, task)
    database, meta = _read_database(root)
    statements = ScpStatements.read(root / "scp_statements.csv")
    context = _RowContext(root=root, database=database, fs=fs, task=task, statements=statements,
                          lmap=load_label_map(label_map), known_statements=frozenset(statements.table.index))
    rows, problems = _table_rows(meta, context)
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError(f"{database}: no usable record ({summarize_problems(problems)})")
    if check_files:
        table = _drop_missing_files(table, database, problems)
    classes = context.lmap.classes if task == SHARED_TASK else statements.task_classes(task)
    return Dataset(
        source="ptbxl",
        root=root,
        version=read_version(root),
        fs=fs,
        task=task,
        label_map=label_map,
        classes=classes,
        records=table,
        problems=problems,
        splits=splits or SplitSpec(),
    )


def _check_rate_and_task(fs: int, task: str) -> None:
    """Refuse a rate PTB-XL does not ship at, or a task it has no labels for, before reading anything."""
    if fs not in PTBXL_FS:
        raise ValueError(f"PTB-XL comes at {PTBXL_FS} Hz, not {fs} Hz; resample after reading")
    if task not in PTBXL_TASKS:
        raise ValueError(f"unknown PTB-XL task {task!r}; choose one of {', '.join(PTBXL_TASKS)}")


def _read_database(root: Path) -> tuple[Path, pd.DataFrame]:
    """``ptbxl_database.csv`` and its rows, refused when absent or missing a column the reader needs."""
    database = root / "ptbxl_database.csv"
    if not database.is_file():
        raise FileNotFoundError(f"{database}: not found; is {root} a PTB-XL tree?")
    meta = pd.read_csv(database, dtype={"filename_lr": str, "filename_hr": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        raise ValueError(f"{database}: missing column(s) {', '.join(missing)}")
    return database, meta


@dataclass(frozen=True)
class _RowContext:
    """What turning one metadata row into a table row needs: the tree, the rate and the task's labels."""

    root: Path
    database: Path
    fs: int
    task: str
    statements: ScpStatements
    lmap: LabelMap
    known_statements: frozenset[str]

    @property
    def filename_column(self) -> str:
        return _FILENAME_COLUMN[self.fs]

    def problem(self, record_id: str, kind: str, message: str, *, dropped: bool = True) -> RecordProblem:
        """A problem of one metadata row, its message prefixed with the table it was found in."""
        return RecordProblem(record_id, str(self.database), kind, f"{self.database}: {message}", dropped=dropped)


def _table_rows(meta: pd.DataFrame, context: _RowContext) -> tuple[list[dict[str, object]], list[RecordProblem]]:
    """One table row per usable metadata row, in order, and the problems of the rows left out or amended."""
    problems: list[RecordProblem] = []
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for rec in meta.to_dict("records"):
        record_id = _record_id(rec, seen, context, problems)
        if record_id is None:
            continue
        row = _record_row(rec, record_id, context, problems)
        if row is not None:
            rows.append(row)
    return rows, problems


def _record_id(rec: dict[str, Any], seen: set[str], context: _RowContext,
               problems: list[RecordProblem]) -> str | None:
    """The row's record id, or None for an id that is not a number or was seen before (first row wins)."""
    try:
        record_id = str(int(rec["ecg_id"]))
    except (TypeError, ValueError):
        problems.append(context.problem(str(rec["ecg_id"]), "bad_ecg_id",
                                        f"ecg_id {rec['ecg_id']!r} is not a record number"))
        return None
    if record_id in seen:
        problems.append(context.problem(record_id, "duplicate_record", f"ecg_id {record_id} appears more than "
                                        "once; the later row is ignored", dropped=False))  # the record stays
        return None
    seen.add(record_id)
    return record_id


def _record_row(rec: dict[str, Any], record_id: str, context: _RowContext,
                problems: list[RecordProblem]) -> dict[str, object] | None:
    """The table row of one record, or None (with a problem) for an unsafe path, bad codes or a bad fold."""
    column = context.filename_column
    unsafe = unsafe_relative_path(rec[column])
    if unsafe:
        kind = "missing_file" if unsafe == "is empty" else "unsafe_path"
        problems.append(context.problem(record_id, kind, f"ecg_id {record_id}: {column} {rec[column]!r} "
                                        f"{unsafe}; refused"))
        return None
    codes = _scp_codes(rec, record_id, context, problems)
    if codes is None:
        return None
    try:
        fold = int(rec["strat_fold"])
    except (TypeError, ValueError):
        problems.append(context.problem(record_id, "bad_fold", f"ecg_id {record_id}: strat_fold "
                                        f"{rec['strat_fold']!r} is not a fold number"))
        return None
    task, fs = context.task, context.fs
    row: dict[str, object] = {
        "record_id": record_id,
        "patient_id": _patient_id(rec["patient_id"]),
        "path": str(context.root / str(rec[column])),
        "fs": fs,
        "n_samples": fs * PTBXL_SECONDS,
        "labels": context.lmap.from_scp(codes) if task == SHARED_TASK else context.statements.labels(task, codes),
        "fold": fold,
        "source": "ptbxl",
        "codes": codes,
    }
    row.update({c: rec.get(c) for c in METADATA_COLUMNS if c in rec})
    return row


def _scp_codes(rec: dict[str, Any], record_id: str, context: _RowContext,
               problems: list[RecordProblem]) -> dict[str, float] | None:
    """The row's statements, or None when unparseable; statements unknown to ``scp_statements.csv`` are
    reported and kept (they map to no label)."""
    try:
        codes = parse_scp_codes(rec["scp_codes"])
    except ScpCodesError as exc:
        problems.append(context.problem(record_id, "bad_scp_codes", f"ecg_id {record_id}: {exc}"))
        return None
    unknown = sorted(set(codes) - context.known_statements)
    if unknown:
        problems.append(context.problem(
            record_id, "unknown_scp_statement",
            f"ecg_id {record_id}: statement(s) {', '.join(unknown)} are not in {context.statements.path}; ignored",
            dropped=False))
    return codes


def _drop_missing_files(table: pd.DataFrame, database: Path, problems: list[RecordProblem]) -> pd.DataFrame:
    """Leave out the records whose header file is absent (a table of one release over another's signals)."""
    present = table["path"].map(lambda p: os.path.isfile(f"{p}.hea"))
    for rec in table.loc[~present, ["record_id", "path"]].itertuples():
        problems.append(RecordProblem(rec.record_id, f"{rec.path}.hea", "missing_file",
                                      f"{rec.path}.hea: record listed in {database.name} but not found"))
    return table.loc[present].reset_index(drop=True)


def _patient_id(value: object) -> str:
    """``15709.0`` -> ``"15709"``: PTB-XL stores patient ids as floats."""
    try:
        return str(int(float(value)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
