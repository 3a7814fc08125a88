"""How large real ECGs are in millivolts: the figures behind the served model's unit check.

Usage::

    python benchmarks/amplitude_bounds.py ~/.cache/ecgml/real-ptbxl/records100 ../shared/real-sample

Reads every WFDB record (``.hea`` + ``.dat``/``.mat``) under the given folders in millivolts (Georgia's
4880/mV header defect corrected, as the G12EC reader does) and prints the distribution of the statistic
serving checks, :func:`ecgml.tracking.pyfunc.typical_amplitude` (median over moving leads of each lead's
1st-99th percentile range), per source and per lead, with the extreme records named. Serving's bounds
(:data:`ecgml.tracking.pyfunc.AMPLITUDE_BOUNDS_MV`) must hold every real record with a wide margin while
records in volts (x 0.001) and microvolts or raw ADC counts (x 1000, or x 200 at a 200/mV gain) fall
outside; the script says whether they do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ecgml.data.formats import DataFormatError
from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.records import load_signal
from ecgml.data.sources.g12ec import G12EC_GAIN_CORRECTIONS
from ecgml.tracking.pyfunc import AMPLITUDE_BOUNDS_MV, typical_amplitude

QUANTILES = (0.0, 0.0001, 0.001, 0.01, 0.5, 0.99, 0.999, 0.9999, 1.0)


def _source(header: Path) -> str:
    name = header.stem
    if name.startswith("E"):
        return "georgia"
    return "ptbxl-500Hz" if name.endswith("_hr") else "ptbxl-100Hz"


def _row(values: np.ndarray) -> str:
    return " ".join(f"{q:g}:{v:.3g}" for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    amplitude: dict[str, list[tuple[float, str]]] = {}
    per_lead: list[np.ndarray] = []
    failed = 0
    for folder in args.folders:
        for header in sorted(folder.expanduser().rglob("*.hea")):
            try:
                x = load_signal(header.with_suffix(""), STANDARD_LEADS, gain_corrections=dict(G12EC_GAIN_CORRECTIONS))
            except (DataFormatError, ValueError, OSError) as exc:
                print(f"skipped {exc}", file=sys.stderr)
                failed += 1
                continue
            x = np.nan_to_num(x)
            amplitude.setdefault(_source(header), []).append((typical_amplitude(x), header.stem))
            low, high = np.percentile(x, [1.0, 99.0], axis=-1)
            per_lead.append(high - low)
    if not amplitude:
        print("no record read", file=sys.stderr)
        return 1
    print(f"typical amplitude (mV; median over moving leads of the 1st-99th percentile range), quantile:value; "
          f"{failed} record(s) unreadable")
    everything = []
    for source, found in sorted(amplitude.items()):
        values = np.array([v for v, _ in found])
        everything.extend(found)
        print(f"  {source:12s} n={len(values):6d}  {_row(values)}")
    everything.sort()
    print(f"  smallest: {', '.join(f'{n} {v:.3g}' for v, n in everything[:5])}")
    print(f"  largest:  {', '.join(f'{n} {v:.3g}' for v, n in everything[-5:])}")
    lead_ranges = np.stack(per_lead)
    print("per lead 1st-99th percentile range (mV), quantiles 0.001 / 0.5 / 0.999:")
    for i, name in enumerate(STANDARD_LEADS):
        q = np.quantile(lead_ranges[:, i], (0.001, 0.5, 0.999))
        print(f"  {name:4s} {q[0]:.3g} / {q[1]:.3g} / {q[2]:.3g}")
    values = np.array([v for v, _ in everything])
    low, high = AMPLITUDE_BOUNDS_MV
    inside = float(((values >= low) & (values <= high)).mean())
    print(f"serving bounds {low:g}-{high:g} mV hold {inside:.4%} of {len(values)} real records; "
          f"margin below x{values.min() / low:.1f}, above x{high / values.max():.1f}")
    for unit, scale in (("volts", 1e-3), ("microvolts or ADC counts at 1000/mV", 1e3), ("ADC counts at 200/mV", 200.0)):
        scaled = values * scale
        caught = float(((scaled < low) | (scaled > high)).mean())
        print(f"  the same records in {unit}: {caught:.4%} refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
