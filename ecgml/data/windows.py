"""Windows over a standardised record: where they start, what domain the network sees, how they combine.

Training, evaluation and serving all cut records into the same windows and merge the window scores the
same way; keeping these here (in the data layer) lets the served model depend on data and models only.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Aggregate = Literal["max", "mean"]
#: The test-time protocols, by name: how window scores merge and how far apart windows start (a fraction of
#: the window). ``max-half``: the maximum over half-overlapping windows (Strodthoff et al. 2020, ecgml's
#: default); ``mean-disjoint``: the mean over non-overlapping windows (the 2025 benchmark of Al-Masud, Lopez
#: Alcaraz and Strodthoff: the mean of the four 2.5 s segments of a 10 s record).
WINDOW_PROTOCOLS: dict[str, tuple[Aggregate, float]] = {"max-half": ("max", 0.5), "mean-disjoint": ("mean", 1.0)}
DEFAULT_WINDOW_PROTOCOL = "max-half"
#: What the network sees of each standardised window: the signal, or its real FFT's magnitude, real or
#: imaginary part (``crop // 2 + 1`` bins, scaled by ``1/sqrt(crop)`` to keep unit variance).
INPUT_DOMAINS = ("time", "fft_magnitude", "fft_real", "fft_imag")


def to_input_domain(x: np.ndarray, domain: str) -> np.ndarray:
    """``[..., leads, samples]`` windows in the model's input domain (the same in training and serving)."""
    if domain == "time":
        return x
    if domain not in INPUT_DOMAINS:
        raise ValueError(f"unknown input domain {domain!r}; choose one of {', '.join(INPUT_DOMAINS)}")
    from ecgml.data.signal import fft_view

    return (fft_view(x, domain.removeprefix("fft_")) / np.sqrt(x.shape[-1])).astype(np.float32)  # type: ignore[arg-type]


def default_stride(crop: int) -> int:
    """Evaluation stride in samples when none is given: half a window (the ``max-half`` protocol's overlap).
    Training evaluation and the served model both take it from here (or from the stride a run stored)."""
    return max(1, round(crop * WINDOW_PROTOCOLS[DEFAULT_WINDOW_PROTOCOL][1]))


def protocol_of(aggregate: str, stride: int, crop: int) -> str:
    """The protocol name of an aggregation and stride (``custom`` when it is neither named one)."""
    for name, (how, fraction) in WINDOW_PROTOCOLS.items():
        if how == aggregate and stride == max(1, round(crop * fraction)):
            return name
    return "custom"


def window_starts(n_valid: int, crop: int, stride: int) -> np.ndarray:
    """Starts of windows of ``crop`` samples every ``stride``, the last one flush with the end.

    A record shorter than the crop gets one window at 0 (its padded tail is part of the window).
    """
    if n_valid <= crop:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_valid - crop + 1, stride, dtype=np.int64)
    if starts[-1] != n_valid - crop:
        starts = np.append(starts, n_valid - crop)
    return starts


def aggregate_windows(window_scores: np.ndarray, owner: np.ndarray, n_records: int,
                      how: Aggregate = "max") -> np.ndarray:
    """Per-record scores from per-window scores (max or mean over each record's windows)."""
    if how not in ("max", "mean"):
        raise ValueError(f"aggregation must be 'max' or 'mean', not {how!r}")
    out = np.full((n_records, window_scores.shape[1]), -np.inf if how == "max" else 0.0)
    if how == "max":
        np.maximum.at(out, owner, window_scores)
    else:
        np.add.at(out, owner, window_scores)
        counts = np.bincount(owner, minlength=n_records)[:, None]
        out = out / np.maximum(counts, 1)
    return out
