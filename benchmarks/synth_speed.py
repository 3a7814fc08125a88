"""Speed of the synthetic generator, and its waveform beside NeuroKit2's ECGSYN when available.

Usage::

    python benchmarks/synth_speed.py                  # 1000 records, every core
    python benchmarks/synth_speed.py --records 21837 --workers 2
    python benchmarks/synth_speed.py --compare 0      # skip the NeuroKit2 comparison

Prints, from one run: the model alone (ms per 10 s 12-lead record at 500 Hz, noise included), then
whole PTB-XL-shaped trees written at 100 Hz only and at 100 + 500 Hz (records per second and seconds
per 1000 records, files and fsyncs included). If ``neurokit2`` is importable (it is not a dependency),
both simulators' lead II is delineated by NeuroKit2's own peak delineator, so intervals and amplitudes
are compared with one method.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ecgml.data.synth import PTBXL_NOISE, generate_ptbxl, simulate


def _model_speed(n: int) -> float:
    """Median milliseconds per record of :func:`simulate` (500 Hz, 10 s, PTB-XL noise)."""
    times = []
    for seed in range(n):
        start = time.perf_counter()
        simulate(["SR", "NORM"] if seed % 2 else ["SR", "LVH", "IMI"], seed, noise=PTBXL_NOISE)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _tree_speed(records: int, rates: tuple[int, ...], workers: int, scratch: Path) -> float:
    root = scratch / f"ptbxl_{'_'.join(map(str, rates))}"
    start = time.perf_counter()
    generate_ptbxl(root, records, seed=0, sampling_rates=rates, workers=workers, progress=False)
    elapsed = time.perf_counter() - start
    shutil.rmtree(root)
    return elapsed


def _fiducials(signal: np.ndarray, fs: int) -> dict[str, float]:
    """Median peak-to-peak intervals and peak amplitudes of one lead, found by NeuroKit2's "peak"
    delineator for both simulators.

    Peaks, not onsets: ECGSYN's baseline is never flat (its ST segment runs into the T wave), so onset
    and offset thresholds would measure the baseline, not the waves; peaks are comparable on both.
    """
    import neurokit2 as nk

    x = signal.astype(float) - float(np.median(signal))
    _, peaks = nk.ecg_peaks(x, sampling_rate=fs)
    _, waves = nk.ecg_delineate(x, peaks, sampling_rate=fs, method="peak")
    r = np.asarray(peaks["ECG_R_Peaks"], dtype=float)

    def points(name: str) -> np.ndarray:
        return np.asarray(waves[name], dtype=float)[: r.size]

    def gap(a: np.ndarray, b: np.ndarray) -> float:
        return 1e3 * float(np.nanmedian((b - a) / fs))

    def height(idx: np.ndarray) -> float:
        idx = idx[~np.isnan(idx)].astype(int)
        return float(np.median(x[idx]))

    p, q, s, t = points("ECG_P_Peaks"), points("ECG_Q_Peaks"), points("ECG_S_Peaks"), points("ECG_T_Peaks")
    return {"P->R ms": gap(p, r), "Q->S ms": gap(q, s), "R->T ms": gap(r, t),
            "RR ms": 1e3 * float(np.median(np.diff(r)) / fs),
            "P mV": height(p), "R mV": height(r), "T mV": height(t)}


def _compare_with_neurokit(n: int) -> None:
    try:
        import neurokit2 as nk
    except ImportError:
        print("neurokit2 is not importable: skipped the comparison with ECGSYN (pip install neurokit2)")
        return
    fs = 500
    ours, theirs = [], []
    nk_seconds = []
    for seed in range(n):
        ecg = simulate(["SR", "NORM"], seed, heart_rate=70.0)
        ours.append(_fiducials(ecg.signal[1], fs))
        start = time.perf_counter()
        other = nk.ecg_simulate(duration=10, sampling_rate=fs, heart_rate=70, noise=0.0, method="ecgsyn",
                                random_state=seed)
        nk_seconds.append(time.perf_counter() - start)
        theirs.append(_fiducials(np.asarray(other, dtype=float), fs))
    start = time.perf_counter()
    nk.ecg_simulate(duration=10, sampling_rate=fs, heart_rate=70, method="multileads", random_state=0)
    multileads = time.perf_counter() - start
    print(f"\nlead II of {n} normal records at 70 bpm, peaks by neurokit2's 'peak' delineator, medians:")
    print(f"{'':14}{'ecgml synth':>14}{'ECGSYN (nk2)':>14}")
    for key in ours[0]:
        a = np.nanmedian([o[key] for o in ours])
        b = np.nanmedian([t[key] for t in theirs])
        print(f"{key:14}{a:14.2f}{b:14.2f}")
    print(f"neurokit2 ecg_simulate: {1e3 * np.median(nk_seconds):.0f} ms per 10 s single-lead record at {fs} Hz, "
          f"{1e3 * multileads:.0f} ms for a 12-lead ('multileads') record")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=0, help="0 = every core")
    parser.add_argument("--compare", type=int, default=10, help="records for the NeuroKit2 comparison")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the trees (deleted after)")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1

    print(f"model alone: {_model_speed(200):.2f} ms per 10 s 12-lead record at 500 Hz (median of 200)")
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        for rates in ((100,), (100, 500)):
            seconds = _tree_speed(args.records, rates, workers, Path(tmp))
            label = "+".join(f"{r} Hz" for r in rates)
            print(f"tree at {label:>14}: {args.records} records in {seconds:.1f} s with {workers} worker(s): "
                  f"{args.records / seconds:.0f} records/s, {1000 * seconds / args.records:.1f} s per 1000")
    if args.compare:
        _compare_with_neurokit(args.compare)


if __name__ == "__main__":
    main()
