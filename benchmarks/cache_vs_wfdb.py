"""Building the 100 Hz cache of a PTB-XL tree versus loading the same records one by one with wfdb.

Usage::

    python benchmarks/cache_vs_wfdb.py                      # full-size synthetic tree (21,837 records)
    python benchmarks/cache_vs_wfdb.py --root /data/ptbxl   # a real tree
    python benchmarks/cache_vs_wfdb.py --records 2000       # quicker

Both sides are timed in the same run on the same files, and the values are compared: the cache must
hold exactly what ``wfdb.rdsamp`` returns (float32 rounding aside). The target is a ratio of at least
15 with the default workers (every core).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import wfdb

from ecgml.data.cache import build_cache
from ecgml.data.ptbxl import read_ptbxl
from ecgml.data.signal import Preprocessing

TARGET_RATIO = 15.0


def _tree(args: argparse.Namespace, scratch: Path) -> Path:
    if args.root:
        return Path(args.root)
    from ecgml.data.synth import generate_ptbxl

    root = scratch / "ptbxl"
    start = time.perf_counter()
    generate_ptbxl(root, args.records, seed=0, sampling_rates=(100,), workers=0, progress=True)
    print(f"synthetic tree of {args.records} records at 100 Hz written in {time.perf_counter() - start:.1f} s")
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="an existing PTB-XL tree (default: synthesise one)")
    parser.add_argument("--records", type=int, default=21837, help="size of the synthetic tree")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scratch", help="folder for the synthetic tree and caches (default: a temp dir)")
    args = parser.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="ecgml-bench-"))
    try:
        root = _tree(args, scratch)
        dataset = read_ptbxl(root, fs=100, task="all")
        paths = dataset.records["path"].tolist()
        print(f"{len(paths)} records, {os.cpu_count()} cores, cache workers={args.workers}")

        start = time.perf_counter()
        reference = np.stack([wfdb.rdsamp(p)[0].T.astype(np.float32) for p in paths])
        t_wfdb = time.perf_counter() - start
        print(f"wfdb.rdsamp one by one: {t_wfdb:.2f} s ({1e3 * t_wfdb / len(paths):.2f} ms/record)")

        results = {}
        for workers in sorted({1, args.workers}):
            cache_dir = scratch / f"cache-{workers}"
            shutil.rmtree(cache_dir, ignore_errors=True)
            start = time.perf_counter()
            cache = build_cache(dataset, Preprocessing(fs=100), cache_dir, workers=workers, progress=False)
            elapsed = time.perf_counter() - start
            order = cache.rows(dataset.records["record_id"].tolist())
            max_diff = float(np.abs(np.asarray(cache.signals[order]) - reference).max())
            results[workers] = elapsed
            print(f"cache build, {workers} worker(s): {elapsed:.2f} s "
                  f"({1e3 * elapsed / len(paths):.2f} ms/record), ratio {t_wfdb / elapsed:.1f}x, "
                  f"max |cache - wfdb| = {max_diff:.2e} mV")
            if max_diff > 1e-5:
                print("FAIL: cache values differ from wfdb")
                return 1
        best = t_wfdb / min(results.values())
        verdict = "meets" if best >= TARGET_RATIO else "MISSES"
        print(f"best ratio {best:.1f}x {verdict} the {TARGET_RATIO:.0f}x target")
        return 0 if best >= TARGET_RATIO else 1
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
