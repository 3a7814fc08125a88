"""Dataset sources: one entry per database ecgml reads, with its reader, native rates, download entry
and defaults (in the style of the backbone registry, :mod:`ecgml.models.registry`).

Everything that depends on which database a run reads (the ``--source`` choices, the rate files are read
at, which tasks a database can be labelled with, which download fetches it, whether foreign records can be
let in) is derived from here, so a new database (CPSC 2018, Chapman-Shaoxing, a user's own) is a reader
function and one :func:`register_source` call::

    def read_cpsc(request: ReadRequest) -> Dataset: ...
    register_source(DatasetSource("cpsc2018", "CPSC 2018", read_cpsc, native_rates=(500,),
                                  tasks=("shared18",), default_task="shared18"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ecgml.data.labels import DEFAULT_LABEL_MAP, PTBXL_TASKS
from ecgml.data.records import Dataset, SplitSpec
from ecgml.data.sources.g12ec import G12EC_FS, read_g12ec
from ecgml.data.sources.ptbxl import PTBXL_FS, read_ptbxl


@dataclass(frozen=True)
class ReadRequest:
    """What a reader is asked for; every reader takes the same request and ignores what it has no use for."""

    root: Path
    fs: int
    task: str
    label_map: str = DEFAULT_LABEL_MAP
    splits: SplitSpec | None = None
    allow_foreign: bool = False
    fold_seed: int = 0
    rebuild_folds: bool = False
    progress: bool = False


Reader = Callable[[ReadRequest], Dataset]


@dataclass(frozen=True)
class DatasetSource:
    """One database: how to read it and the facts about it the rest of ecgml needs."""

    name: str
    title: str
    reader: Reader
    #: Rates its files ship at; a cache is read from the lowest one at or above its own rate.
    native_rates: tuple[int, ...]
    #: Label tasks it can be read with (G12EC: the classes it shares with PTB-XL only).
    tasks: tuple[str, ...]
    default_task: str
    default_label_map: str = DEFAULT_LABEL_MAP
    #: The download catalogue entry that fetches it (``ecgml data download NAME``), if any.
    download: str | None = None
    #: Whether its reader can let in records of other databases (the CLI's ``--allow-foreign``).
    foreign_records: bool = False
    #: Said when a task outside ``tasks`` is asked for.
    task_hint: str = ""

    def __post_init__(self) -> None:
        if not self.native_rates or min(self.native_rates) <= 0:
            raise ValueError(f"dataset source {self.name!r}: native rates must be positive, got {self.native_rates}")
        if self.default_task not in self.tasks:
            raise ValueError(f"dataset source {self.name!r}: default task {self.default_task!r} "
                             "is not one of its tasks")

    def native_fs(self, fs: int) -> int:
        """The rate to read files at for a cache at ``fs``: the lowest native rate at or above it, else the
        highest (resampling down from more samples, never up from fewer)."""
        at_or_above = [r for r in sorted(self.native_rates) if r >= fs]
        return at_or_above[0] if at_or_above else max(self.native_rates)

    def check_task(self, task: str) -> None:
        """Refuse a task this database cannot be labelled with, saying which it can."""
        if task not in self.tasks:
            raise ValueError(self.task_hint or f"{self.title} cannot be read with task {task!r}; "
                             f"choose one of {', '.join(self.tasks)}")

    def read(self, request: ReadRequest) -> Dataset:
        """The :class:`Dataset` of ``request``, read at the native rate that serves ``request.fs``."""
        self.check_task(request.task)
        return self.reader(ReadRequest(**{**request.__dict__, "fs": self.native_fs(request.fs)}))


_REGISTRY: dict[str, DatasetSource] = {}
#: The registry, read-only: ``name -> DatasetSource``.
DATASET_SOURCES: Mapping[str, DatasetSource] = MappingProxyType(_REGISTRY)


def register_source(source: DatasetSource) -> DatasetSource:
    """Add a database; a second source under a taken name is an error (two readers for one name)."""
    if source.name in _REGISTRY and _REGISTRY[source.name] is not source:
        raise ValueError(f"a dataset source called {source.name!r} is already registered")
    _REGISTRY[source.name] = source
    return source


def get_dataset_source(name: str) -> DatasetSource:
    """The source called ``name``; an unknown name raises and lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def source_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def _read_ptbxl(request: ReadRequest) -> Dataset:
    return read_ptbxl(request.root, fs=request.fs, task=request.task, label_map=request.label_map,
                      splits=request.splits)


def _read_g12ec(request: ReadRequest) -> Dataset:
    return read_g12ec(request.root, label_map=request.label_map, splits=request.splits,
                      allow_foreign=request.allow_foreign, fold_seed=request.fold_seed,
                      rebuild_folds=request.rebuild_folds, progress=request.progress)


register_source(DatasetSource(
    "ptbxl", "PTB-XL", _read_ptbxl, native_rates=PTBXL_FS, tasks=PTBXL_TASKS,
    default_task="superdiagnostic", download="ptbxl",
))
register_source(DatasetSource(
    "g12ec", "G12EC", _read_g12ec, native_rates=(G12EC_FS,), tasks=("shared18",), default_task="shared18",
    download="g12ec", foreign_records=True,
    task_hint="G12EC is labelled on the shared classes only: use task 'shared18'",
))
