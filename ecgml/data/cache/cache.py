"""Signal cache: one memory-mapped ``float32[records, leads, samples]`` per dataset and preprocessing.

Layout of one cache folder (named ``<source>-<fs>hz-<n>leads-<digest>``)::

    signals.f32     raw little-endian float32, C order, shape in the manifest
    records.csv     one row per cache row: ids, fold, source length, valid length, NaN and flat leads
                    (record-id order, except that the last rows fill the places of dropped records)
    leads.json      the lead order of the second axis
    manifest.json   every input of the key, the digest, shape, per-lead statistics, dropped records
    labels/<task>--<label_map>/classes.json + labels.npy   label matrices added per task

The key hashes everything that changes the bytes: source, version, each record's files (relative path,
size, mtime), folds, split, preprocessing and the cache format. The folder is built under a temporary
name and renamed into place only when complete, under a file lock, so a second process building the
same cache waits and reuses it and a killed build leaves nothing that looks finished.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ecgml.data.cache.rows import Facts, Job, rows_per_aligned_step
from ecgml.data.cache.rows import load_rows as _load_rows
from ecgml.data.cache.store import touch_last_used
from ecgml.data.formats import DataFormatError
from ecgml.data.records import Dataset
from ecgml.data.signal import Preprocessing, RunningStats
from ecgml.io import atomic_write_json, atomic_write_stream, current_umask, named_os_errors

#: 2: records with an implausible amplitude (a lying gain) are dropped; dropped records carry a kind.
CACHE_FORMAT_VERSION = 2
SIGNALS_FILE = "signals.f32"
_CHUNK = 256


def _directory_listing(folder: str) -> dict[str, tuple[int, int]]:
    """``name -> (size, mtime_ns)`` of the files in one folder.

    One scandir instead of a stat per guess, through a descriptor of the folder: each stat then resolves
    one name rather than the whole path again, which makes the listing of a big tree about 40% faster.
    """
    listing: dict[str, tuple[int, int]] = {}
    try:
        fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return listing
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.is_file():
                    st = entry.stat()
                    listing[entry.name] = (st.st_size, st.st_mtime_ns)
    finally:
        os.close(fd)
    return listing


def _fingerprints(paths: Sequence[str], root: Path) -> tuple[list[int], list[str], list[int], list[int]]:
    """The files of each record (a path without extension), flat: how many each record has, then the
    relative name, size and mtime of each, a record's files together in ``.hea``, ``.dat``, ``.mat`` order."""
    listings: dict[str, dict[str, tuple[int, int]]] = {}
    root_text = str(root).rstrip("/") + "/"
    counts: list[int] = []
    names: list[str] = []
    sizes: list[int] = []
    mtimes: list[int] = []
    for path in paths:
        folder, _, stem = path.rpartition("/")
        listing = listings.get(folder)
        if listing is None:
            listing = listings[folder] = _directory_listing(folder)
        relative = path.removeprefix(root_text)
        before = len(names)
        for suffix in (".hea", ".dat", ".mat"):
            found = listing.get(stem + suffix)
            if found is not None:
                names.append(relative + suffix)
                sizes.append(found[0])
                mtimes.append(found[1])
        counts.append(len(names) - before)
    return counts, names, sizes, mtimes


def cache_key(dataset: Dataset, preprocessing: Preprocessing) -> tuple[str, dict[str, object]]:
    """The digest of every input that changes the cache, and those inputs (for the manifest).

    The records' ids, folds and files are hashed as flat lists (JSON text for the strings, int64 bytes
    for the numbers): one encoder call each rather than one per record.
    """
    records = dataset.records.sort_values("record_id")
    counts, names, sizes, mtimes = _fingerprints(records["path"].astype(str).tolist(), dataset.root)
    inputs: dict[str, object] = {
        "cache_format": CACHE_FORMAT_VERSION,
        "source": dataset.source,
        "version": dataset.version,
        "preprocessing": preprocessing.to_dict(),
        "splits": str(dataset.splits),
        "gain_corrections": sorted(dataset.gain_corrections.items()),
    }
    hasher = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode())
    hasher.update(json.dumps(records["record_id"].astype(str).tolist()).encode())
    hasher.update(json.dumps(names).encode())
    for numbers in (records["fold"], counts, sizes, mtimes):
        hasher.update(np.asarray(numbers, dtype="<i8").tobytes())
    inputs["n_records"] = len(records)
    return hasher.hexdigest(), inputs


@contextmanager
def _file_lock(path: Path, waiting: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path``; if another process holds it, say ``waiting`` and wait."""
    with named_os_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - closed below, after the lock is released
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                sys.stderr.write(waiting + "\n")
                sys.stderr.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class Cache:
    """An opened cache folder: memory-mapped signals, the records table, leads and manifest."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{self.path}: not a complete cache (no manifest.json)")
        self.manifest: dict[str, object] = json.loads(manifest_path.read_text(encoding="utf-8"))
        shape = tuple(self.manifest["shape"])  # type: ignore[arg-type]
        expected = int(np.prod(shape)) * 4
        signals_path = self.path / SIGNALS_FILE
        size = signals_path.stat().st_size if signals_path.is_file() else -1
        if size != expected:
            raise DataFormatError(signals_path, f"has {size} bytes, manifest promises {expected}")
        self.signals = np.memmap(signals_path, dtype="<f4", mode="r", shape=shape)  # type: ignore[arg-type]
        self.records = pd.read_csv(self.path / "records.csv", dtype={"record_id": str, "patient_id": str},
                                   keep_default_na=False)
        self.leads: tuple[str, ...] = tuple(json.loads((self.path / "leads.json").read_text()))
        touch_last_used(self.path)

    @property
    def digest(self) -> str:
        return str(self.manifest["digest"])

    @property
    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-lead mean and std of the training split (for standardisation)."""
        s = self.manifest["train_stats"]  # type: ignore[index]
        return np.asarray(s["mean"], dtype=np.float32), np.asarray(s["std"], dtype=np.float32)  # type: ignore[index]

    def rows(self, record_ids: Sequence[str]) -> np.ndarray:
        """Cache row indices of ``record_ids``; an id not in the cache is an error."""
        index = pd.Series(np.arange(len(self.records)), index=self.records["record_id"])
        missing = [r for r in record_ids if r not in index.index]
        if missing:
            raise KeyError(f"{self.path}: {len(missing)} record(s) not in the cache, e.g. {missing[:3]}")
        return index.loc[list(record_ids)].to_numpy()

    def write_labels(self, dataset: Dataset) -> Path:
        """Store ``classes.json`` and ``labels.npy`` of the dataset's task, aligned to cache rows."""
        table = dataset.records.set_index("record_id")
        aligned = table.reindex(self.records["record_id"])
        if aligned["labels"].isna().any():
            raise ValueError(f"{self.path}: cache holds records the {dataset.task} table lacks")
        folder = self.path / "labels" / f"{dataset.task.replace('/', '_')}--{dataset.label_map}"
        matrix = dataset.label_matrix(aligned.reset_index())
        atomic_write_stream(folder / "labels.npy", lambda handle: np.save(handle, matrix))
        atomic_write_json(folder / "classes.json", list(dataset.classes))
        if dataset.label_space is not None:
            atomic_write_json(folder / "label_space.json", dataset.label_space)
        return folder

    def load_labels(self, task: str, label_map: str) -> tuple[tuple[str, ...], np.ndarray]:
        folder = self.path / "labels" / f"{task.replace('/', '_')}--{label_map}"
        if not (folder / "labels.npy").is_file():
            raise FileNotFoundError(f"{folder}: no labels for task {task!r} / map {label_map!r}; "
                                    "run `ecgml data prepare` with that task")
        classes = tuple(json.loads((folder / "classes.json").read_text()))
        return classes, np.load(folder / "labels.npy")


def cache_folder_name(dataset: Dataset, preprocessing: Preprocessing, digest: str) -> str:
    return f"{dataset.source}-{preprocessing.fs}hz-{len(preprocessing.leads)}leads-{digest[:16]}"


def build_cache(
    dataset: Dataset,
    preprocessing: Preprocessing,
    cache_dir: str | os.PathLike[str],
    *,
    workers: int = 1,
    progress: bool = True,
) -> Cache:
    """Return the cache for ``dataset`` + ``preprocessing``, building it once if it does not exist."""
    cache_dir = Path(cache_dir)
    digest, inputs = cache_key(dataset, preprocessing)
    final = cache_dir / cache_folder_name(dataset, preprocessing, digest)
    if (final / "manifest.json").is_file():
        return Cache(final)
    waiting = f"waiting for another process to finish building the cache {final}"
    with _file_lock(cache_dir / f".{final.name}.lock", waiting):
        if (final / "manifest.json").is_file():  # built by another process while we waited
            return Cache(final)
        for stale in cache_dir.glob(f".{final.name}.*.building"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        with named_os_errors(cache_dir):
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".building", dir=cache_dir))
        try:
            with named_os_errors(final):
                _build_into(tmp, dataset, preprocessing, digest, inputs, workers, progress)
                os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide the cache from teammates
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Cache(final)


def _build_into(
    folder: Path,
    dataset: Dataset,
    preprocessing: Preprocessing,
    digest: str,
    inputs: dict[str, object],
    workers: int,
    progress: bool,
) -> None:
    """Fill ``folder`` with a complete cache: signals, records.csv, leads.json, then the manifest last."""
    records = dataset.records.sort_values("record_id", kind="stable").reset_index(drop=True)
    if records.empty:
        raise ValueError(f"{dataset.root}: no records to cache")
    shape = (len(records), len(preprocessing.leads), preprocessing.n_samples)
    signals_path = folder / SIGNALS_FILE
    _allocate(signals_path, shape)
    jobs = _jobs(records, dataset, preprocessing, str(signals_path), shape)
    desc = f"caching {dataset.source} at {preprocessing.fs} Hz"
    facts, stats = _run_jobs(jobs, workers, len(records), desc if progress else None)
    table, dropped = _facts_table(records, facts)
    kept = np.flatnonzero(table["error"].isna().to_numpy())
    if not len(kept):
        raise ValueError(f"{dataset.root}: every record failed to load, e.g. {dropped[0]['reason']}")
    shape, order = _fill_gaps(signals_path, shape, kept)
    if len(order) < len(table):
        table = table.iloc[order].reset_index(drop=True)
    _write_records_csv(folder / "records.csv", table)
    with named_os_errors(folder / "leads.json"):
        (folder / "leads.json").write_text(json.dumps(list(preprocessing.leads)) + "\n")
    mean, std = stats.result()
    manifest = {
        "digest": digest,
        "inputs": inputs,
        "shape": list(shape),
        "dtype": "float32",
        "units": "mV",
        "layout": "records x leads x samples, C order, little-endian",
        "created": datetime.now(UTC).isoformat(),
        "dataset": dataset.describe(),
        "train_stats": {"mean": mean.tolist(), "std": std.tolist(),
                        "n_records": int(table["fold"].isin(dataset.splits.train).sum())},
        "nan_samples": int(table["nan_count"].sum()),
        "records_with_nan": int((table["nan_count"] > 0).sum()),
        "records_with_flat_leads": int((table["flat_leads"] != "").sum()),
        "dropped": dropped,
    }
    for name in (SIGNALS_FILE, "records.csv", "leads.json"):
        with named_os_errors(folder / name), open(folder / name, "rb") as handle:
            os.fsync(handle.fileno())
    atomic_write_json(folder / "manifest.json", manifest)


def _allocate(signals_path: Path, shape: tuple[int, int, int]) -> None:
    """Create the signals file at its full size (sparse: the workers write every row at its offset)."""
    try:
        with open(signals_path, "wb") as handle:
            handle.truncate(int(np.prod(shape)) * 4)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {signals_path}: {exc.strerror}") from exc


def chunk_rows(shape: tuple[int, int, int]) -> int:
    """Rows per job: about :data:`_CHUNK`, a multiple of the rows that fill whole direct-I/O blocks, so
    that every slice but the last starts and ends on a block boundary."""
    step = rows_per_aligned_step(shape[1] * shape[2] * 4)
    return max(1, -(-_CHUNK // step)) * step


def _jobs(records: pd.DataFrame, dataset: Dataset, preprocessing: Preprocessing, signals_path: str,
          shape: tuple[int, int, int]) -> list[Job]:
    """One job per slice of rows; the training flags say which rows feed the standardisation stats."""
    in_train = records["fold"].isin(dataset.splits.train).to_numpy()
    if not in_train.any():  # no training fold here: standardise with everything rather than nothing
        in_train[:] = True
    paths = records["path"].astype(str).tolist()
    rates = [float(f) for f in records["fs"]]
    train = in_train.tolist()
    corrections = tuple(sorted(dataset.gain_corrections.items()))
    chunk = chunk_rows(shape)
    return [Job(signals_path, shape, start, tuple(paths[start:start + chunk]), tuple(rates[start:start + chunk]),
                preprocessing, corrections, tuple(train[start:start + chunk]))
            for start in range(0, len(records), chunk)]


def _run_jobs(jobs: list[Job], workers: int, total: int, desc: str | None) -> tuple[list[Facts], RunningStats]:
    """Run the jobs (in ``workers`` processes when more than one) and gather their facts and stats."""
    facts: list[Facts] = []
    stats = RunningStats(jobs[0].shape[1])
    bar = tqdm(total=total, desc=desc, unit="rec", disable=desc is None)
    with ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=min(workers, len(jobs))))
            results: Iterable[tuple[list[Facts], RunningStats]] = pool.map(_load_rows, jobs)
        else:
            results = map(_load_rows, jobs)
        for result, part in results:
            facts.extend(result)
            stats.merge(part)
            bar.update(len(result))
    bar.close()
    return facts, stats


def _facts_table(records: pd.DataFrame, facts: list[Facts]) -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """The records with each one's facts beside it, and the dropped ones (id, path, reason, kind)."""
    table = pd.concat([records, pd.DataFrame(facts)], axis=1)
    for column in ("error", "error_kind"):
        if column not in table:
            table[column] = None
    failed = table["error"].notna()
    dropped = [{"record_id": r, "path": p, "reason": e, "kind": k} for r, p, e, k in
               table.loc[failed, ["record_id", "path", "error", "error_kind"]].itertuples(index=False)]
    return table, dropped


def _fill_gaps(signals_path: Path, shape: tuple[int, int, int],
               kept: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """Fill the rows of dropped records with the last kept rows and cut the file to the kept rows; return
    the new shape and, per row, which record (index into the built rows) it now holds.

    Moving the rows after each gap down instead would keep record-id order but rewrite, and first read
    back from the disk, most of the file when an early record is dropped: gigabytes for a 500 Hz tree.
    This moves one row per dropped record. Nothing reads a cache by position: rows are found by record id
    through ``records.csv``, which lists them in this order.
    """
    n_kept = len(kept)
    if n_kept == shape[0]:
        return shape, kept
    holes = np.setdiff1d(np.arange(n_kept), kept)  # dropped rows inside the part of the file that stays
    movers = kept[kept >= n_kept]  # kept rows beyond it: exactly as many
    row_bytes = shape[1] * shape[2] * 4
    with named_os_errors(signals_path), open(signals_path, "r+b") as handle:
        fd = handle.fileno()
        for hole, mover in zip(holes.tolist(), movers.tolist(), strict=True):
            row = os.pread(fd, row_bytes, mover * row_bytes)
            if len(row) != row_bytes or os.pwrite(fd, row, hole * row_bytes) != row_bytes:
                raise OSError(errno.EIO, f"{signals_path}: short read or write while moving row {mover}")
        handle.truncate(n_kept * row_bytes)
    order = np.arange(n_kept)
    order[holes] = movers
    return (n_kept, shape[1], shape[2]), order


def _write_records_csv(path: Path, table: pd.DataFrame) -> None:
    """One row per cache row: ids, fold, lengths, NaN and flat leads, path and the record's codes."""
    columns = ["record_id", "patient_id", "fold", "source", "fs", "n_samples", "n_valid", "nan_count",
               "flat_leads", "path"]
    out = table[columns].copy()
    out["codes"] = [json.dumps(c if isinstance(c, dict) else list(c)) for c in table["codes"]]
    out.insert(0, "row", np.arange(len(out)))
    with named_os_errors(path):
        out.to_csv(path, index=False)
