"""Building the cache of a PTB-XL tree versus loading the same records one by one with wfdb; the same
for a G12EC tree of MATLAB v4 ``.mat`` records against ``scipy.io.loadmat`` and ``wfdb.rdsamp``.

Usage::

    python benchmarks/cache_vs_wfdb.py                      # full-size synthetic tree (21,837 records)
    python benchmarks/cache_vs_wfdb.py --root /data/ptbxl   # a real tree
    python benchmarks/cache_vs_wfdb.py --fs 500             # the 500 Hz files (records500/)
    python benchmarks/cache_vs_wfdb.py --records 2000 --mat-records 1000   # quicker

Both sides are timed in the same run on the same files (1 worker and ``--workers``), and the values are
compared: every cache row must be bit for bit what ``wfdb.rdsamp`` returns after float32 rounding (a
digest per record, taken outside the timed wfdb calls, so no copy of the tree stays in memory). The target is
a ratio of at least 50 with the default workers (every core) on the PTB-XL tree.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import wfdb

from ecgml.data.cache.cache import build_cache
from ecgml.data.records import Dataset
from ecgml.data.signal import Preprocessing
from ecgml.data.sources.g12ec import G12EC_FS
from ecgml.data.sources.ptbxl import PTBXL_FS, read_ptbxl

TARGET_RATIO = 50.0


def _tree(args: argparse.Namespace, scratch: Path) -> Path:
    if args.root:
        return Path(args.root)
    from ecgml.data.synth import generate_ptbxl

    root = scratch / "ptbxl"
    start = time.perf_counter()
    generate_ptbxl(root, args.records, seed=0, sampling_rates=(args.fs,), workers=0, progress=True)
    print(f"synthetic tree of {args.records} records at {args.fs} Hz written in "
          f"{time.perf_counter() - start:.1f} s")
    return root


def _digest(values: np.ndarray) -> bytes:
    """A record's float32 values as 16 bytes (no-sample NaN as the cache's 0, -0.0 as 0.0)."""
    return hashlib.blake2b((np.nan_to_num(values) + np.float32(0)).tobytes(), digest_size=16).digest()


def _wfdb_loop(paths: list[str]) -> tuple[float, list[bytes]]:
    """Seconds ``wfdb.rdsamp`` takes to load every record as float32 ``[leads, samples]``, and a digest of
    each record's values. Only the loading is timed; the digests stand in for a reference copy, which for
    a 500 Hz tree would hold 5 GB in memory through the builds and slow them down."""
    elapsed, digests = 0.0, []
    for p in paths:
        start = time.perf_counter()
        values = wfdb.rdsamp(p)[0].T.astype(np.float32)
        elapsed += time.perf_counter() - start
        digests.append(_digest(values))
    return elapsed, digests


def _read_and_compare(signals: np.ndarray, order: np.ndarray, digests: list[bytes],
                      rows: np.ndarray) -> tuple[float, list[int]]:
    """Seconds to read the cache rows ``order`` once, in slices, and the ``rows`` whose values are not
    bit for bit wfdb's."""
    t_read, differ = 0.0, []
    for a in range(0, len(order), 1024):
        start = time.perf_counter()
        values = np.asarray(signals[order[a:a + 1024]])
        t_read += time.perf_counter() - start  # the build writes past the page cache: the first read pays
        differ += [int(r) for r, v in zip(rows[a:a + 1024], values, strict=True) if _digest(v) != digests[r]]
    return t_read, differ


def _time_builds(dataset: Dataset, fs: int, digests: list[bytes], t_base: float, workers: int,
                 scratch: Path, label: str) -> float | None:
    """Build the cache with 1 and ``workers`` workers; print each ratio; None if values differ."""
    best = 0.0
    for n in sorted({1, workers}):
        cache_dir = scratch / f"cache-{label}-{n}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        start = time.perf_counter()
        cache = build_cache(dataset, Preprocessing(fs=fs), cache_dir, workers=n, progress=False)
        elapsed = time.perf_counter() - start
        ids = dataset.records["record_id"]
        kept = ids.isin(set(cache.records["record_id"])).to_numpy()  # the cache drops implausible records
        order = cache.rows(ids[kept].tolist())
        t_read, differ = _read_and_compare(cache.signals, order, digests, np.flatnonzero(kept))
        n_records = len(dataset.records)
        dropped = f", {int((~kept).sum())} record(s) dropped as the cache's checks say" if not kept.all() else ""
        print(f"{label} cache build, {n} worker(s): {elapsed:.2f} s ({1e3 * elapsed / n_records:.3f} ms/record), "
              f"ratio {t_base / elapsed:.1f}x, {len(order) - len(differ)} of {len(order)} records bit-identical "
              f"to wfdb{dropped}; first full read of the cache afterwards {t_read:.2f} s")
        shutil.rmtree(cache_dir, ignore_errors=True)
        if differ:
            path = dataset.records["path"].iloc[differ[0]]
            print(f"FAIL: {label} cache values differ from wfdb in {len(differ)} record(s), e.g. {path}")
            return None
        best = max(best, t_base / elapsed)
    return best


def _mat_case(args: argparse.Namespace, scratch: Path) -> bool:
    """G12EC ``.mat`` records: loadmat and wfdb per record against the cache at 500 Hz."""
    from scipy.io import loadmat

    from ecgml.data.sources.g12ec import read_g12ec
    from ecgml.data.synth import generate_g12ec

    root = scratch / "g12ec"
    generate_g12ec(root, args.mat_records, seed=1, workers=0, progress=False)
    dataset = read_g12ec(root)
    plain = dataset.records.query("n_samples == 5000 and header_dialect == '2021' and declared_gain == 1000")
    dataset.records = plain.reset_index(drop=True)  # the records wfdb reads as they are, stacked
    paths = dataset.records["path"].tolist()
    start = time.perf_counter()
    for p in paths:
        loadmat(f"{p}.mat")["val"]
    t_loadmat = time.perf_counter() - start
    t_wfdb, digests = _wfdb_loop(paths)
    print(f"{len(paths)} G12EC .mat records of 10 s at 500 Hz: scipy.io.loadmat alone {t_loadmat:.2f} s "
          f"({1e3 * t_loadmat / len(paths):.2f} ms/record), wfdb.rdsamp {t_wfdb:.2f} s "
          f"({1e3 * t_wfdb / len(paths):.2f} ms/record)")
    best = _time_builds(dataset, G12EC_FS, digests, t_wfdb, args.workers, scratch, ".mat")
    if best is not None:
        print(f".mat: best ratio {best:.1f}x against wfdb.rdsamp, "
              f"{best * t_loadmat / t_wfdb:.1f}x against scipy.io.loadmat (which does not even scale to mV)")
    return best is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="an existing PTB-XL tree (default: synthesise one)")
    parser.add_argument("--records", type=int, default=21837, help="size of the synthetic tree")
    parser.add_argument("--fs", type=int, choices=PTBXL_FS, default=100, help="which PTB-XL files to read")
    parser.add_argument("--mat-records", type=int, default=2000, help="size of the synthetic G12EC tree (0: skip)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scratch", help="folder for the synthetic trees and caches (default: a temp dir)")
    args = parser.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="ecgml-bench-"))
    try:
        root = _tree(args, scratch)
        dataset = read_ptbxl(root, fs=args.fs, task="all")
        paths = dataset.records["path"].tolist()
        print(f"{len(paths)} records at {args.fs} Hz, {os.cpu_count()} cores, cache workers 1 and {args.workers}")

        t_wfdb, digests = _wfdb_loop(paths)
        print(f"wfdb.rdsamp one by one: {t_wfdb:.2f} s ({1e3 * t_wfdb / len(paths):.2f} ms/record)")
        best = _time_builds(dataset, args.fs, digests, t_wfdb, args.workers, scratch, "PTB-XL")
        mat_ok = _mat_case(args, scratch) if args.mat_records else True
        if best is None or not mat_ok:
            return 1
        verdict = "meets" if best >= TARGET_RATIO else "MISSES"
        print(f"PTB-XL: best ratio {best:.1f}x {verdict} the {TARGET_RATIO:.0f}x target")
        return 0 if best >= TARGET_RATIO else 1
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
