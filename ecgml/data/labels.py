"""Label spaces: the PTB-XL benchmark tasks and the 18 classes PTB-XL and G12EC share.

The shared classes and their SCP <-> SNOMED CT correspondence live in data files
(``resources/labelmap_<name>.csv``), one per label map, with a note beside every choice; class order is
the file's row order. Nothing here re-types a code: everything is read from those files.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

#: The task of the 18 classes PTB-XL and G12EC share (the study's default fine-tuning task).
SHARED_TASK = "shared18"
#: The task of a target's own label space (its codes with enough positives: :mod:`ecgml.data.label_space`).
OWN_TASK = "own"
#: The PTB-XL label tasks of Strodthoff et al. (2020), plus the study's shared 18 classes.
PTBXL_TASKS: tuple[str, ...] = (
    "all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm", SHARED_TASK,
)
#: Every task some source can be read with.
TASKS: tuple[str, ...] = (*PTBXL_TASKS, OWN_TASK)
LABEL_MAPS: tuple[str, ...] = ("challenge", "seed")
DEFAULT_LABEL_MAP = "challenge"
#: SNOMED CT code of sinus rhythm: the Challenge's "normal" class (scored, and written by the synthetic
#: Georgia tree); the one code used outside the label-map files.
SINUS_RHYTHM = "426783006"


@dataclass(frozen=True)
class LabelMap:
    """One SCP <-> SNOMED CT correspondence for the shared classes (see the CSV's notes)."""

    name: str
    classes: tuple[str, ...]
    descriptions: Mapping[str, str]
    scp_codes: Mapping[str, tuple[str, ...]]
    snomed_codes: Mapping[str, tuple[str, ...]]
    #: Records per class in the full real datasets under this map (PTB-XL v1.0.1 of 21,837; Georgia
    #: from the Challenge's dx_mapping tables, summed over the class's codes, of 10,344).
    ptbxl_counts: Mapping[str, int]
    georgia_counts: Mapping[str, int]
    notes: Mapping[str, str]

    def from_scp(self, statements: Iterable[str]) -> tuple[str, ...]:
        """Shared classes of a PTB-XL record, in class order, from its SCP statements."""
        present = set(statements)
        return tuple(c for c in self.classes if present.intersection(self.scp_codes[c]))

    def from_snomed(self, codes: Iterable[str]) -> tuple[str, ...]:
        """Shared classes of a G12EC record, in class order, from its SNOMED CT codes."""
        present = set(codes)
        return tuple(c for c in self.classes if present.intersection(self.snomed_codes[c]))

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description, logged with every run so the map in use is never a guess."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "scp_codes": {c: list(v) for c, v in self.scp_codes.items()},
            "snomed_codes": {c: list(v) for c, v in self.snomed_codes.items()},
        }


def _resource(name: str) -> Path:
    return Path(str(resources.files("ecgml.data") / "resources" / name))


@cache
def load_label_map(name: str = DEFAULT_LABEL_MAP) -> LabelMap:
    """Load a label map by name (``challenge`` or ``seed``)."""
    if name not in LABEL_MAPS:
        raise ValueError(f"unknown label map {name!r}; choose one of {', '.join(LABEL_MAPS)}")
    path = _resource(f"labelmap_{name}.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    classes = tuple(r["class"] for r in rows)
    return LabelMap(
        name=name,
        classes=classes,
        descriptions={r["class"]: r["name"] for r in rows},
        scp_codes={r["class"]: tuple(r["scp_codes"].split("|")) for r in rows},
        snomed_codes={r["class"]: tuple(r["snomed_codes"].split("|")) for r in rows},
        ptbxl_counts={r["class"]: int(r["ptbxl_count"]) for r in rows},
        georgia_counts={r["class"]: int(r["georgia_count"]) for r in rows},
        notes={r["class"]: r["note"] for r in rows},
    )


#: The file of the PTB-XL statements outside the shared classes and their SNOMED CT codes.
SCP_SNOMED_FILE = "scp_snomed.csv"
#: PTB-XL tasks whose classes are SCP statements themselves (the others group statements into classes).
STATEMENT_TASKS: tuple[str, ...] = ("all", "diagnostic", "form", "rhythm")


@cache
def scp_snomed_codes() -> dict[str, tuple[str, ...]]:
    """Every PTB-XL SCP statement with a SNOMED CT equivalent -> its codes, in one place for the zero-shot map.

    The statements of the shared classes come from the ``challenge`` label map (each to its class's codes); every
    other statement from ``resources/scp_snomed.csv``: the conversion the PhysioNet/CinC Challenge 2021 applied to
    its PTB-XL tranche (each code's PTB-XL count there equals the Challenge's ``PTB_XL`` count), with a note where
    a statement was converted to a broader code. A statement in both files is an error: one home for each.
    """
    lmap = load_label_map("challenge")
    out = {statement: lmap.snomed_codes[c] for c in lmap.classes for statement in lmap.scp_codes[c]}
    with _resource(SCP_SNOMED_FILE).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            statement = row["statement"]
            if statement in out:
                raise ValueError(f"{SCP_SNOMED_FILE}: statement {statement!r} is already in labelmap_challenge.csv")
            out[statement] = tuple(row["snomed_codes"].split("|"))
    return out


@dataclass(frozen=True)
class SnomedConcept:
    code: str
    abbreviation: str
    description: str
    scored: bool


@cache
def snomed_vocabulary() -> dict[str, SnomedConcept]:
    """The SNOMED CT codes the PhysioNet/CinC Challenges (2020, 2021) use; others are 'unknown'."""
    path = _resource("snomed_ct_challenge.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        return {
            r["snomed_code"]: SnomedConcept(r["snomed_code"], r["abbreviation"], r["description"],
                                            r["scored"] == "1")
            for r in csv.DictReader(handle)
        }


class ScpStatements:
    """``scp_statements.csv`` of a PTB-XL tree, and the label tasks derived from it.

    Task definitions follow Strodthoff et al. (2020): every key of a record's ``scp_codes`` counts,
    whatever its likelihood; ``diagnostic`` keeps statements flagged diagnostic, ``subdiagnostic`` and
    ``superdiagnostic`` map them to ``diagnostic_subclass`` / ``diagnostic_class``; ``form`` and
    ``rhythm`` keep statements with those flags. Classes are sorted, as the benchmark's binarizer did.
    """

    def __init__(self, table: pd.DataFrame, path: str = "scp_statements.csv") -> None:
        self.table = table
        self.path = path
        self._mappings: dict[str, dict[str, str]] = {}

    @classmethod
    def read(cls, path: str | Path) -> ScpStatements:
        try:
            table = pd.read_csv(path, index_col=0)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: scp_statements.csv not found") from None
        missing = {"diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"} - set(
            table.columns
        )
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return cls(table, str(path))

    def _flagged(self, column: str) -> pd.DataFrame:
        return self.table[self.table[column] == 1.0]

    def task_mapping(self, task: str) -> dict[str, str]:
        """SCP statement -> class name for one task (``shared18`` is handled by :class:`LabelMap`)."""
        if task not in self._mappings:
            self._mappings[task] = self._build_mapping(task)
        return self._mappings[task]

    def _build_mapping(self, task: str) -> dict[str, str]:
        if task == "all":
            return {s: s for s in self.table.index}
        if task in ("diagnostic", "form", "rhythm"):
            return {s: s for s in self._flagged(task).index}
        if task in ("subdiagnostic", "superdiagnostic"):
            column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
            diag = self._flagged("diagnostic")[column]
            return {s: str(v) for s, v in diag.items() if isinstance(v, str) or not math.isnan(v)}
        raise ValueError(f"unknown PTB-XL task {task!r}; choose one of {', '.join(PTBXL_TASKS)}")

    def task_classes(self, task: str) -> tuple[str, ...]:
        return tuple(sorted(set(self.task_mapping(task).values())))

    def labels(self, task: str, statements: Iterable[str]) -> tuple[str, ...]:
        mapping = self.task_mapping(task)
        return tuple(sorted({mapping[s] for s in statements if s in mapping}))


def label_matrix(labels: Iterable[Iterable[str]], classes: Sequence[str]) -> np.ndarray:
    """Binary ``uint8[records, classes]`` from per-record label tuples, columns in class order.

    A label outside ``classes`` is an error rather than silently dropped: it means the caller mixed
    label spaces.
    """
    index = {c: i for i, c in enumerate(classes)}
    per_record = list(labels)
    out = np.zeros((len(per_record), len(classes)), dtype=np.uint8)
    for row, record_labels in enumerate(per_record):
        for label in record_labels:
            if label not in index:
                raise ValueError(f"label {label!r} is not one of the {len(classes)} classes")
            out[row, index[label]] = 1
    return out
