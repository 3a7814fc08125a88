"""Signal cache: one memory-mapped ``float32[records, leads, samples]`` per dataset and preprocessing.

Layout of one cache folder (named ``<source>-<fs>hz-<n>leads-<digest>``)::

    signals.f32     raw little-endian float32, C order, shape in the manifest
    records.csv     one row per cache row: ids, fold, source length, valid length, NaN and flat leads
    leads.json      the lead order of the second axis
    manifest.json   every input of the key, the digest, shape, per-lead statistics, dropped records
    labels/<task>--<label_map>/classes.json + labels.npy   label matrices added per task

The key hashes everything that changes the bytes: source, version, each record's files (relative path,
size, mtime), folds, split, preprocessing and the cache format. The folder is built under a temporary
name and renamed into place only when complete, under a file lock, so a second process building the
same cache waits and reuses it and a killed build leaves nothing that looks finished.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ecgml.data.cache_rows import Job
from ecgml.data.cache_rows import load_rows as _load_rows
from ecgml.data.cache_store import touch_last_used
from ecgml.data.formats import DataFormatError
from ecgml.data.records import Dataset
from ecgml.data.signal import Preprocessing, RunningStats
from ecgml.io import atomic_write_json, atomic_write_stream, named_os_errors

#: 2: records with an implausible amplitude (a lying gain) are dropped; dropped records carry a kind.
CACHE_FORMAT_VERSION = 2
SIGNALS_FILE = "signals.f32"
_CHUNK = 256


def _directory_listing(folder: str) -> dict[str, tuple[int, int]]:
    """``name -> (size, mtime_ns)`` of the files in one folder (one scandir instead of a stat per guess)."""
    listing: dict[str, tuple[int, int]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file():
                    st = entry.stat()
                    listing[entry.name] = (st.st_size, st.st_mtime_ns)
    except FileNotFoundError:
        pass
    return listing


def _fingerprints(paths: Sequence[str], root: Path) -> list[list[object]]:
    """For each record (a path without extension): relative name, size and mtime of its files."""
    listings: dict[str, dict[str, tuple[int, int]]] = {}
    root_text = str(root).rstrip("/") + "/"
    out: list[list[object]] = []
    for path in paths:
        folder, _, stem = path.rpartition("/")
        listing = listings.get(folder)
        if listing is None:
            listing = listings[folder] = _directory_listing(folder)
        relative = path.removeprefix(root_text)
        out.append([[relative + suffix, *listing[stem + suffix]]
                    for suffix in (".hea", ".dat", ".mat") if stem + suffix in listing])
    return out


def cache_key(dataset: Dataset, preprocessing: Preprocessing) -> tuple[str, dict[str, object]]:
    """The digest of every input that changes the cache, and those inputs (for the manifest)."""
    records = dataset.records.sort_values("record_id")
    prints = _fingerprints([str(p) for p in records["path"]], dataset.root)
    files = [[rid, int(fold), fp] for rid, fold, fp in zip(records["record_id"], records["fold"], prints, strict=True)]
    inputs: dict[str, object] = {
        "cache_format": CACHE_FORMAT_VERSION,
        "source": dataset.source,
        "version": dataset.version,
        "preprocessing": preprocessing.to_dict(),
        "splits": str(dataset.splits),
        "gain_corrections": sorted(dataset.gain_corrections.items()),
    }
    hasher = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode())
    hasher.update(json.dumps(files).encode())
    inputs["n_records"] = len(files)
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
    records = dataset.records.sort_values("record_id", kind="stable").reset_index(drop=True)
    if records.empty:
        raise ValueError(f"{dataset.root}: no records to cache")
    shape = (len(records), len(preprocessing.leads), preprocessing.n_samples)
    signals_path = folder / SIGNALS_FILE
    try:
        with open(signals_path, "wb") as handle:
            handle.truncate(int(np.prod(shape)) * 4)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {signals_path}: {exc.strerror}") from exc
    in_train = records["fold"].isin(dataset.splits.train).to_numpy()
    if not in_train.any():  # no training fold here: standardise with everything rather than nothing
        in_train[:] = True
    jobs = [
        Job(str(signals_path), shape, start,
             tuple(records["path"].iloc[start:start + _CHUNK]),
             tuple(float(f) for f in records["fs"].iloc[start:start + _CHUNK]),
             preprocessing, tuple(sorted(dataset.gain_corrections.items())),
             tuple(bool(t) for t in in_train[start:start + _CHUNK]))
        for start in range(0, len(records), _CHUNK)
    ]
    facts: list[dict[str, object]] = []
    stats = RunningStats(shape[1])
    bar = tqdm(total=len(records), desc=f"caching {dataset.source} at {preprocessing.fs} Hz",
               unit="rec", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result, part in pool.map(_load_rows, jobs):
                facts.extend(result)
                stats.merge(part)
                bar.update(len(result))
    else:
        for job in jobs:
            result, part = _load_rows(job)
            facts.extend(result)
            stats.merge(part)
            bar.update(len(result))
    bar.close()

    table = pd.concat([records, pd.DataFrame(facts)], axis=1)
    if "error" not in table:
        table["error"] = None
    failed = table["error"].notna()
    if "error_kind" not in table:
        table["error_kind"] = None
    dropped = [{"record_id": r, "path": p, "reason": e, "kind": k} for r, p, e, k in
               table.loc[failed, ["record_id", "path", "error", "error_kind"]].itertuples(index=False)]
    kept = np.flatnonzero(~failed.to_numpy())
    signals = np.memmap(signals_path, dtype="<f4", mode="r+", shape=shape)
    if len(kept) < len(records):  # close the gaps left by dropped records, in order
        for new, old in enumerate(kept):
            if new != old:
                signals[new] = signals[old]
        signals.flush()
        del signals
        with open(signals_path, "r+b") as handle:
            handle.truncate(len(kept) * shape[1] * shape[2] * 4)
        shape = (len(kept), shape[1], shape[2])
        signals = np.memmap(signals_path, dtype="<f4", mode="r+", shape=shape)
    if not len(kept):
        raise ValueError(f"{dataset.root}: every record failed to load, e.g. {dropped[0]['reason']}")

    table = table.loc[kept].reset_index(drop=True)
    train_rows = int(table["fold"].isin(dataset.splits.train).sum())
    mean, std = stats.result()
    del signals

    columns = ["record_id", "patient_id", "fold", "source", "fs", "n_samples", "n_valid", "nan_count",
               "flat_leads", "path"]
    out = table[columns].copy()
    out["codes"] = table["codes"].map(lambda c: json.dumps(c if isinstance(c, dict) else list(c)))
    out.insert(0, "row", np.arange(len(out)))
    with named_os_errors(folder / "records.csv"):
        out.to_csv(folder / "records.csv", index=False)
    with named_os_errors(folder / "leads.json"):
        (folder / "leads.json").write_text(json.dumps(list(preprocessing.leads)) + "\n")
    manifest = {
        "digest": digest,
        "inputs": inputs,
        "shape": list(shape),
        "dtype": "float32",
        "units": "mV",
        "layout": "records x leads x samples, C order, little-endian",
        "created": datetime.now(UTC).isoformat(),
        "dataset": dataset.describe(),
        "train_stats": {"mean": mean.tolist(), "std": std.tolist(), "n_records": train_rows},
        "nan_samples": int(table["nan_count"].sum()),
        "records_with_nan": int((table["nan_count"] > 0).sum()),
        "records_with_flat_leads": int((table["flat_leads"] != "").sum()),
        "dropped": dropped,
    }
    for name in (SIGNALS_FILE, "records.csv", "leads.json"):
        with named_os_errors(folder / name), open(folder / name, "rb") as handle:
            os.fsync(handle.fileno())
    atomic_write_json(folder / "manifest.json", manifest)
