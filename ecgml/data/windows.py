"""Windows over a standardised record: where they start, what domain the network sees, how they combine.

Training, evaluation and serving all cut records into the same windows and merge the window scores the
same way; keeping these here (in the data layer) lets the served model depend on data and models only.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Aggregate = Literal["max", "mean"]
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
