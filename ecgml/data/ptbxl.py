"""Reader of a PTB-XL tree: ``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/``, ``records500/``.

The table comes from the metadata alone (fast: no signal is opened); each record's files are checked
for existence so that a table from one release over a signal tree of another (v1.0.1 has 21,837
records, v1.0.3 21,799) reports the records it cannot find instead of failing later.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path, PurePosixPath

import pandas as pd

from ecgml.data.labels import DEFAULT_LABEL_MAP, PTBXL_TASKS, ScpStatements, load_label_map
from ecgml.data.records import Dataset, RecordProblem, SplitSpec, summarize_problems

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


def read_version(root: Path) -> str:
    """The release named in the tree (a ``RELEASE``/``VERSION`` file or the download receipt)."""
    for name in ("VERSION", "RELEASE"):
        path = root / name
        if path.is_file():
            return path.read_text(encoding="utf-8").strip() or "unknown"
    receipt = root / "DOWNLOAD.json"
    if receipt.is_file():
        import json

        return str(json.loads(receipt.read_text(encoding="utf-8")).get("version", "unknown"))
    return "unknown"


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
    if fs not in PTBXL_FS:
        raise ValueError(f"PTB-XL comes at {PTBXL_FS} Hz, not {fs} Hz; resample after reading")
    if task not in PTBXL_TASKS:
        raise ValueError(f"unknown PTB-XL task {task!r}; choose one of {', '.join(PTBXL_TASKS)}")
    database = root / "ptbxl_database.csv"
    if not database.is_file():
        raise FileNotFoundError(f"{database}: not found; is {root} a PTB-XL tree?")
    meta = pd.read_csv(database, dtype={"filename_lr": str, "filename_hr": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        raise ValueError(f"{database}: missing column(s) {', '.join(missing)}")
    statements = ScpStatements.read(root / "scp_statements.csv")
    lmap = load_label_map(label_map)
    filename_column = _FILENAME_COLUMN[fs]
    known_statements = set(statements.table.index)

    problems: list[RecordProblem] = []
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for rec in meta.to_dict("records"):
        try:
            record_id = str(int(rec["ecg_id"]))
        except (TypeError, ValueError):
            problems.append(RecordProblem(str(rec["ecg_id"]), str(database), "bad_ecg_id",
                                          f"{database}: ecg_id {rec['ecg_id']!r} is not a record number"))
            continue
        if record_id in seen:
            problems.append(RecordProblem(record_id, str(database), "duplicate_record",
                                          f"{database}: ecg_id {record_id} appears more than once; the later "
                                          "row is ignored", dropped=False))  # the record itself stays
            continue
        seen.add(record_id)
        unsafe = unsafe_relative_path(rec[filename_column])
        if unsafe:
            kind = "missing_file" if unsafe == "is empty" else "unsafe_path"
            problems.append(RecordProblem(record_id, str(database), kind,
                                          f"{database}: ecg_id {record_id}: {filename_column} "
                                          f"{rec[filename_column]!r} {unsafe}; refused"))
            continue
        record_path = root / str(rec[filename_column])
        try:
            codes = parse_scp_codes(rec["scp_codes"])
        except ScpCodesError as exc:
            problems.append(RecordProblem(record_id, str(database), "bad_scp_codes",
                                          f"{database}: ecg_id {record_id}: {exc}"))
            continue
        unknown = sorted(set(codes) - known_statements)
        if unknown:
            problems.append(RecordProblem(
                record_id, str(database), "unknown_scp_statement",
                f"{database}: ecg_id {record_id}: statement(s) {', '.join(unknown)} are not in "
                f"{statements.path}; ignored", dropped=False))
        try:
            fold = int(rec["strat_fold"])
        except (TypeError, ValueError):
            problems.append(RecordProblem(record_id, str(database), "bad_fold",
                                          f"{database}: ecg_id {record_id}: strat_fold "
                                          f"{rec['strat_fold']!r} is not a fold number"))
            continue
        labels = lmap.from_scp(codes) if task == "shared18" else statements.labels(task, codes)
        row: dict[str, object] = {
            "record_id": record_id,
            "patient_id": _patient_id(rec["patient_id"]),
            "path": str(record_path),
            "fs": fs,
            "n_samples": fs * PTBXL_SECONDS,
            "labels": labels,
            "fold": fold,
            "source": "ptbxl",
            "codes": codes,
        }
        row.update({c: rec.get(c) for c in METADATA_COLUMNS if c in rec})
        rows.append(row)

    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError(f"{database}: no usable record ({summarize_problems(problems)})")
    if check_files:
        present = table["path"].map(lambda p: os.path.isfile(f"{p}.hea"))
        for rec in table.loc[~present, ["record_id", "path"]].itertuples():
            problems.append(RecordProblem(rec.record_id, f"{rec.path}.hea", "missing_file",
                                          f"{rec.path}.hea: record listed in {database.name} "
                                          f"but not found"))
        table = table.loc[present].reset_index(drop=True)
    classes = lmap.classes if task == "shared18" else statements.task_classes(task)
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


def _patient_id(value: object) -> str:
    """``15709.0`` -> ``"15709"``: PTB-XL stores patient ids as floats."""
    try:
        return str(int(float(value)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
