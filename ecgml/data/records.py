"""The records table every reader returns, the splits over it, and signal loading by lead name.

Downstream code sees only this: a :class:`Dataset` (a records table plus its class list and the
problems met while reading) and ``float32[leads, samples]`` arrays in millivolts, in
:data:`~ecgml.data.leads.STANDARD_LEADS` order (or a named subset).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ecgml.data.formats import (
    DataFormatError,
    WfdbHeader,
    read_dat16,
    read_header,
    read_matv4,
    to_physical,
    wfdb_checksum,
)
from ecgml.data.formats.wfdb import UNIT_SCALE as _UNIT_SCALE
from ecgml.data.labels import label_matrix
from ecgml.data.leads import STANDARD_LEADS, lead_index

#: Columns every reader's table starts with; readers add metadata columns after them.
RECORD_COLUMNS: tuple[str, ...] = (
    "record_id", "patient_id", "path", "fs", "n_samples", "labels", "fold", "source",
)


@dataclass(frozen=True)
class RecordProblem:
    """Something wrong with one record, kept so ``ecgml data stats`` can count it by kind.

    ``dropped`` says whether the record was left out of the table because of it.
    """

    record_id: str
    path: str
    kind: str
    message: str
    dropped: bool = True


@dataclass(frozen=True)
class SplitSpec:
    """Which folds make the train, validation and test splits (PTB-XL default: 1-8 / 9 / 10)."""

    train: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    val: tuple[int, ...] = (9,)
    test: tuple[int, ...] = (10,)

    def __post_init__(self) -> None:
        # Validation may be the test folds themselves (the original study's G12EC choice: it selects the
        # epoch on the test fold, so its test numbers are optimistic); any other overlap is a mistake.
        evaluation = self.val if set(self.val) == set(self.test) else self.val + self.test
        seen = Counter(self.train + evaluation)
        twice = sorted(f for f, n in seen.items() if n > 1)
        if twice:
            raise ValueError(f"fold(s) {twice} appear in more than one split")
        if not self.train or not self.val or not self.test:
            raise ValueError("train, validation and test splits each need at least one fold")

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        """Parse ``"1-8/9/10"`` (train/val/test; ranges and comma lists allowed)."""
        parts = text.split("/")
        if len(parts) != 3:
            raise ValueError(f"split {text!r} must be train/val/test folds, e.g. '1-8/9/10'")
        return cls(*(tuple(_parse_folds(p, text)) for p in parts))

    def __str__(self) -> str:
        return "/".join(",".join(map(str, folds)) for folds in (self.train, self.val, self.test))

    def folds(self, split: str) -> tuple[int, ...]:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        return getattr(self, split)


def _parse_folds(part: str, text: str) -> list[int]:
    folds: list[int] = []
    for item in part.split(","):
        item = item.strip()
        try:
            if "-" in item:
                lo, hi = (int(x) for x in item.split("-"))
                if lo > hi:
                    raise ValueError
                folds.extend(range(lo, hi + 1))
            else:
                folds.append(int(item))
        except ValueError:
            raise ValueError(f"split {text!r}: {item!r} is not a fold number or range") from None
    return folds


@dataclass
class Dataset:
    """A records table with the class list of its task and what went wrong while reading it."""

    source: str
    root: Path
    version: str
    fs: int
    task: str
    label_map: str
    classes: tuple[str, ...]
    records: pd.DataFrame
    problems: list[RecordProblem] = field(default_factory=list)
    splits: SplitSpec = field(default_factory=SplitSpec)
    #: Gains a header may declare that are known to be wrong, mapped to the true gain (G12EC 2020).
    gain_corrections: dict[float, float] = field(default_factory=dict)
    #: A target's own label space (:class:`~ecgml.data.label_space.LabelSpace` as a dict: classes and dropped
    #: classes with counts); None where the classes come from a task or label map.
    label_space: dict[str, object] | None = None

    def split(self, name: str) -> pd.DataFrame:
        """Records of one split (``train``, ``val``, ``test``)."""
        return self.records[self.records["fold"].isin(self.splits.folds(name))]

    def labelled(self) -> pd.DataFrame:
        """Records with at least one label in this task (the benchmark drops the others)."""
        return self.records[self.records["labels"].map(len) > 0]

    def label_matrix(self, records: pd.DataFrame | None = None) -> np.ndarray:
        """``uint8[records, classes]`` for ``records`` (default: the whole table)."""
        table = self.records if records is None else records
        return label_matrix(table["labels"], self.classes)

    def load_signal(self, record_id: str, leads: Sequence[str] = STANDARD_LEADS) -> np.ndarray:
        """The record's signal as ``float32[len(leads), n_samples]`` in millivolts."""
        row = self.records.loc[self.records["record_id"] == record_id]
        if row.empty:
            raise KeyError(f"record {record_id!r} is not in the {self.source} table of {self.root}")
        return load_signal(row["path"].iloc[0], leads, gain_corrections=self.gain_corrections)

    def describe(self) -> dict[str, object]:
        """A JSON-ready summary: sizes, classes, the split, problems by kind."""
        return {
            "source": self.source,
            "root": str(self.root),
            "version": self.version,
            "fs": self.fs,
            "task": self.task,
            "label_map": self.label_map,
            "classes": list(self.classes),
            "splits": str(self.splits),
            "n_records": len(self.records),
            "n_labelled": int((self.records["labels"].map(len) > 0).sum()),
            "problems": dict(Counter(p.kind for p in self.problems)),
            **({"label_space": self.label_space} if self.label_space else {}),
        }


def summarize_problems(problems: Sequence[RecordProblem]) -> str:
    """``"3 problems: 2 foreign_record, 1 missing_dx; e.g. <first message>"``: why a table came out empty."""
    if not problems:
        return "no problem recorded"
    kinds = Counter(p.kind for p in problems)
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{len(problems)} problem(s): {counts}; e.g. {problems[0].message}"


def read_signal_file(header: WfdbHeader, header_path: Path) -> np.ndarray:
    """Digital samples (``[n_sig, n]``, int16 or float) of the file a header points to."""
    data_path = header_path.parent / header.signals[0].file_name
    if Path(header.signals[0].file_name).name != header.signals[0].file_name:
        raise DataFormatError(header_path, f"signal file name {header.signals[0].file_name!r} has a path")
    if data_path.suffix.lower() == ".mat":
        digital = read_matv4(data_path).data
        if digital.shape != (header.n_sig, header.n_samples):
            raise DataFormatError(
                data_path,
                f"holds a {digital.shape[0]} x {digital.shape[1]} matrix but its header "
                f"declares {header.n_sig} signals x {header.n_samples} samples",
            )
    else:
        digital = read_dat16(data_path, header)
    if digital.shape[-1] == 0:
        raise DataFormatError(data_path, "holds no samples (an empty record)")
    return digital


def load_signal(
    path: str | Path,
    leads: Sequence[str] = STANDARD_LEADS,
    *,
    gain_corrections: dict[float, float] | None = None,
    verify_checksums: bool = True,
) -> np.ndarray:
    """Load a WFDB record (``path`` without extension) as ``float32[len(leads), n]`` millivolts.

    Leads are matched by name. Checksums in the header are verified (a mismatch means a corrupt file),
    and a declared gain found in ``gain_corrections`` is replaced by the true one.
    """
    header_path = Path(f"{path}.hea")
    header = read_header(header_path)
    digital = read_signal_file(header, header_path)
    specs = header.signals
    if verify_checksums and np.issubdtype(digital.dtype, np.integer):
        declared = np.fromiter((s.checksum for s in specs), dtype=np.int64, count=len(specs))
        bad = np.nonzero((wfdb_checksum(digital) - declared) % 65536)[0]
        if bad.size:
            names = ", ".join(specs[i].name for i in bad)
            raise DataFormatError(header_path, f"checksum mismatch in lead(s) {names}: corrupt signal file")
    rows = lead_index(header.lead_names, leads, str(header_path))
    corrections = gain_corrections or {}
    gains, baselines = [], []
    for i in rows:
        spec = specs[i]
        unit_scale = _UNIT_SCALE.get(spec.units)
        if unit_scale is None:
            raise DataFormatError(header_path, f"lead {spec.name} is in {spec.units!r}; expected mV or uV")
        gains.append(corrections.get(spec.gain, spec.gain) * unit_scale)
        baselines.append(spec.baseline)
    return to_physical(digital[rows], gains, baselines)



def labels_to_json(labels: Sequence[str]) -> str:
    """How a label tuple is written in CSV files (a JSON list: unambiguous, no eval to read it)."""
    return json.dumps(list(labels))


def labels_from_json(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text)) if isinstance(text, str) and text else ()
