"""Dataset sources: one entry per database ecgml reads, with its reader, native rates, download entry
and defaults (in the style of the backbone registry, :mod:`ecgml.models.registry`).

Everything that depends on which database a run reads (the ``--source`` choices, the rate files are read
at, which tasks a database can be labelled with, which download fetches it, whether foreign records can be
let in, how long a cache row is) is derived from here, so a new database is a reader function (one module
beside this one) and one :func:`register_source` call::

    def read_mine(request: ReadRequest) -> Dataset: ...
    register_source(DatasetSource("mine", "My database", read_mine, native_rates=(500,),
                                  tasks=(OWN_TASK,), default_task=OWN_TASK))

A database of the Challenge collections needs no reader of its own: ``cinc`` reads them all
(``--tranche`` picks one); a user's own labelled records are ``folder``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ecgml.data.label_space import DEFAULT_MIN_POSITIVES
from ecgml.data.labels import DEFAULT_LABEL_MAP, OWN_TASK, PTBXL_TASKS, SHARED_TASK
from ecgml.data.records import Dataset, SplitSpec
from ecgml.data.sources.cinc import CINC_FS, TRANCHES, read_cinc
from ecgml.data.sources.folder import FOLDER_FS, read_folder
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
    #: A target's own label space: codes with at least this many positive records, or these classes.
    min_positives: int = DEFAULT_MIN_POSITIVES
    classes: tuple[str, ...] = ()
    #: Challenge collections: read only the tranches of these record-id prefixes (empty: every tranche).
    tranches: tuple[str, ...] = ()
    #: K-fold cross-validation (0: the stored ten folds and ``splits``) and the fold tested (1..K).
    cv: int = 0
    cv_fold: int = 0


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
    #: Seconds of each record a cache row holds (records are centre-cropped to it, shorter ones padded and
    #: marked by their valid length): training crops and evaluation windows both come from these seconds.
    cache_seconds: float = 10.0
    #: Record-id prefix -> the source whose records those are (``HR`` -> ``ptbxl``): a backbone pretrained on
    #: that source is refused on them unless forced.
    same_records_as: Mapping[str, str] = field(default_factory=dict)
    #: Whether it takes ``--min-positives``/``--classes`` (its classes are its own codes), ``--tranche`` and
    #: ``--cv``.
    own_label_space: bool = False
    tranches: tuple[str, ...] = ()
    #: What the report calls it beside its title (e.g. the 18 classes G12EC shares with PTB-XL).
    label_space_text: str = ""

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


def records_of_source(dataset: Dataset, source: str) -> list[str]:
    """Ids of the records of ``dataset`` that are records of ``source`` re-published (the Challenge's ``HR``
    records are PTB-XL's): what a backbone pretrained on ``source`` must not be fine-tuned or tested on."""
    entry = get_dataset_source(dataset.source)
    prefixes = {prefix for prefix, same in entry.same_records_as.items() if same == source}
    if not prefixes or "tranche" not in dataset.records:
        return []
    table = dataset.records
    return table.loc[table["tranche"].isin(prefixes), "record_id"].astype(str).tolist()


def overlap_refusal(dataset: Dataset, source: str, what: str) -> str | None:
    """Why ``what`` (a backbone pretrained on ``source``) may not meet ``dataset``, or None when it may."""
    overlap = records_of_source(dataset, source)
    if not overlap:
        return None
    title = get_dataset_source(source).title
    return (f"{dataset.root}: {len(overlap)} record(s) (e.g. {', '.join(overlap[:3])}) are {title} records, and "
            f"{what} was pretrained on {title}: scores on them would count its own training data as new. Leave "
            f"them out (--tranche without HR) or pass --allow-overlap to use them anyway")


def _read_ptbxl(request: ReadRequest) -> Dataset:
    return read_ptbxl(request.root, fs=request.fs, task=request.task, label_map=request.label_map,
                      splits=request.splits)


def _read_g12ec(request: ReadRequest) -> Dataset:
    return read_g12ec(request.root, label_map=request.label_map, splits=request.splits,
                      allow_foreign=request.allow_foreign, fold_seed=request.fold_seed,
                      rebuild_folds=request.rebuild_folds, progress=request.progress)


#: Seconds a cache row holds for the sources with records of any length (6 s to 30 min): a Challenge collection,
#: a user's folder.
LONG_RECORD_SECONDS = 30.0


def _read_cinc(request: ReadRequest) -> Dataset:
    return read_cinc(request.root, tranches=request.tranches, min_positives=request.min_positives,
                     classes=request.classes, splits=request.splits, cv=request.cv, cv_fold=request.cv_fold,
                     fold_seed=request.fold_seed, rebuild_folds=request.rebuild_folds, progress=request.progress)


def _read_folder(request: ReadRequest) -> Dataset:
    return read_folder(request.root, min_positives=request.min_positives, classes=request.classes,
                       splits=request.splits, cv=request.cv, cv_fold=request.cv_fold, fold_seed=request.fold_seed,
                       rebuild_folds=request.rebuild_folds, tranches=request.tranches, progress=request.progress)


register_source(DatasetSource(
    "ptbxl", "PTB-XL", _read_ptbxl, native_rates=PTBXL_FS, tasks=PTBXL_TASKS,
    default_task="superdiagnostic", download="ptbxl",
))
register_source(DatasetSource(
    "g12ec", "G12EC", _read_g12ec, native_rates=(G12EC_FS,), tasks=(SHARED_TASK,), default_task=SHARED_TASK,
    download="g12ec", foreign_records=True,
    task_hint=f"G12EC is labelled on the shared classes only: use task {SHARED_TASK!r}",
    label_space_text="the 18 classes it shares with PTB-XL",
))
register_source(DatasetSource(
    "cinc", "PhysioNet/CinC Challenge", _read_cinc, native_rates=CINC_FS, tasks=(OWN_TASK,), default_task=OWN_TASK,
    task_hint=f"Challenge collections are labelled with their own codes: use task {OWN_TASK!r}",
    cache_seconds=LONG_RECORD_SECONDS, own_label_space=True, tranches=tuple(t.prefix for t in TRANCHES),
    same_records_as={t.prefix: t.same_records_as for t in TRANCHES if t.same_records_as},
    label_space_text="its own SNOMED CT codes",
))
register_source(DatasetSource(
    "folder", "a labelled folder", _read_folder, native_rates=(FOLDER_FS,), tasks=(OWN_TASK,), default_task=OWN_TASK,
    task_hint=f"a folder is labelled with its own labels: use task {OWN_TASK!r}",
    cache_seconds=LONG_RECORD_SECONDS, own_label_space=True, label_space_text="its own labels",
))
