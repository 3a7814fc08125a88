"""Pure signal functions: NumPy ``[..., leads, samples]`` in, NumPy out, no hidden state.

They are composed by :class:`Preprocessing`, whose fields are exactly what a cache key must contain.
SciPy's signal package is imported by the functions that filter or resample, not here: the CLI imports
this module for :class:`Preprocessing`, and ``ecgml --help`` should not wait for SciPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import cache
from typing import Literal

import numpy as np

from ecgml.data.leads import STANDARD_LEADS, lead_index, resolve_leads

FftView = Literal["magnitude", "real", "imag"]
FFT_VIEWS: tuple[str, ...] = ("magnitude", "real", "imag")


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased, as PTB-XL's 100 Hz files were made)."""
    if fs_in == fs_out:
        return np.asarray(x, dtype=np.float32)
    if fs_in <= 0 or fs_out <= 0:
        raise ValueError(f"sampling rates must be positive, got {fs_in} -> {fs_out}")
    from scipy.signal import resample_poly

    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    out = resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(np.float32)


def select_leads(x: np.ndarray, available: Sequence[str], wanted: Sequence[str], where: str = "signal") -> np.ndarray:
    """Rows of ``x`` for the ``wanted`` leads, matched by name; a missing lead is a clear error."""
    return x[..., lead_index(available, wanted, where), :]


@cache
def _butter_sos(fs: float, low: float | None, high: float | None, order: int) -> np.ndarray:
    from scipy.signal import butter

    nyquist = fs / 2
    if high is not None and high >= nyquist:
        high = None  # nothing to cut above Nyquist at this rate
    if low and high:
        return butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    if low:
        return butter(order, low, btype="highpass", fs=fs, output="sos")
    if high:
        return butter(order, high, btype="lowpass", fs=fs, output="sos")
    return np.empty((0, 6))


def bandpass(x: np.ndarray, fs: float, low: float | None = 0.5, high: float | None = 40.0,
             order: int = 3) -> np.ndarray:
    """Zero-phase Butterworth band-pass (removes baseline wander and high-frequency noise)."""
    if low is not None and high is not None and low >= high:
        raise ValueError(f"band-pass low edge {low} Hz must be below the high edge {high} Hz")
    sos = _butter_sos(float(fs), low, high, order)
    if sos.size == 0:
        return np.asarray(x, dtype=np.float32)
    # Odd-extension padding a few seconds long keeps the high-pass edge transient out of the record.
    padlen = min(x.shape[-1] - 1, int(3 * fs))
    from scipy.signal import sosfiltfilt

    return sosfiltfilt(sos, x, axis=-1, padlen=padlen).astype(np.float32)


def pad_or_crop(x: np.ndarray, length: int, mode: Literal["center", "start"] = "center") -> np.ndarray:
    """Fix the last axis to ``length`` samples: crop (centre or start) or zero-pad at the end."""
    n = x.shape[-1]
    if n == length:
        return x
    if n > length:
        start = (n - length) // 2 if mode == "center" else 0
        return x[..., start:start + length]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, length - n)]
    return np.pad(x, pad)


def nan_to_zero(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN samples with 0 (the baseline) and say how many there were."""
    nan = np.isnan(x)
    count = int(nan.sum())
    return (np.where(nan, np.float32(0), x) if count else x), count


#: A lead whose peak-to-peak range is below this many mV is flat: a disconnected electrode or zero-filled.
FLAT_TOLERANCE_MV = 1e-3


def flat_leads(x: np.ndarray, tolerance_mv: float = FLAT_TOLERANCE_MV) -> np.ndarray:
    """Boolean per lead: True where the lead barely moves (disconnected electrode or zero-filled)."""
    return np.ptp(x, axis=-1) < tolerance_mv


#: Bounds on an ECG's typical lead standard deviation in mV (the median over the leads that move). Real
#: PTB-XL and Georgia records sit at 0.08-0.41 mV; outside 0.005-5 mV the header's gain or units are off
#: by an order of magnitude or more, and such a record would skew the standardisation statistics.
PLAUSIBLE_LEAD_STD_MV: tuple[float, float] = (0.005, 5.0)


def implausible_amplitude(x: np.ndarray, moving: np.ndarray,
                          bounds: tuple[float, float] = PLAUSIBLE_LEAD_STD_MV) -> str | None:
    """Why ``x`` (millivolts, NaN already zeroed) cannot be an ECG at the declared gain, or None.

    A lying gain passes every checksum (they are computed on the digital samples), so the physical size
    of the signal is the only witness left.
    """
    if not moving.any():
        return None
    typical = float(np.median(x[moving].std(axis=-1)))
    low, high = bounds
    if low <= typical <= high:
        return None
    return (f"implausible amplitude: the leads' typical standard deviation is {typical:.3g} mV, outside the "
            f"{low:g}-{high:g} mV of real ECGs; the header's gain or units are probably wrong")


def fit_standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead mean and std of ``[records, leads, samples]`` (fit on the training split only)."""
    mean = x.mean(axis=(0, 2), dtype=np.float64)
    std = x.std(axis=(0, 2), dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Apply per-lead statistics from :func:`fit_standardizer` or :class:`RunningStats`."""
    return ((x - mean[:, None]) / std[:, None]).astype(np.float32)


def row_moments(x: np.ndarray, squares: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``[..., samples]``: the mean and the sum of squared deviations (float64).

    One pass for the sum and one for the squares (into ``squares`` when given, a float32 buffer of
    ``x``'s shape), instead of the three of a centred computation. Both sums run in float32 with NumPy's
    pairwise summation, several times faster than summing into float64 (a casting pass): the sum of
    squares is then good to about 1e-6 relative, so ``m2`` to about 1e-6 times ``1 + mean^2/var``,
    far below what standardisation statistics need.
    """
    n = x.shape[-1]
    total = x.sum(axis=-1).astype(np.float64)
    mean = total / n
    squared = np.square(x, out=squares)
    m2 = squared.sum(axis=-1).astype(np.float64) - total * mean
    return mean, np.maximum(m2, 0.0)


class RunningStats:
    """Per-lead mean and std accumulated record by record (Chan et al.), for caches too big to stack."""

    def __init__(self, n_leads: int) -> None:
        self.count = 0
        self.mean = np.zeros(n_leads)
        self.m2 = np.zeros(n_leads)

    def update(self, x: np.ndarray) -> None:
        n = x.shape[-1]
        mean = x.mean(axis=-1, dtype=np.float64)
        m2 = ((x - mean[:, None]) ** 2).sum(axis=-1, dtype=np.float64)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total

    def add_rows(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Fold in many rows of ``n`` samples at once, given each row's per-lead ``mean`` and ``m2``
        (``[rows, leads]``, e.g. from :func:`row_moments`)."""
        if not len(mean):
            return
        part = RunningStats(mean.shape[1])
        part.count = n * len(mean)
        part.mean = mean.mean(axis=0)
        part.m2 = m2.sum(axis=0) + n * ((mean - part.mean) ** 2).sum(axis=0)
        self.merge(part)

    def merge(self, other: RunningStats) -> None:
        """Fold in statistics gathered elsewhere (another worker's slice)."""
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * other.count / total
        self.m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / total
        self.count = total

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        std = np.sqrt(self.m2 / max(self.count, 1))
        return self.mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def fft_view(x: np.ndarray, view: FftView) -> np.ndarray:
    """Frequency-domain input: magnitude, real or imaginary part of the real FFT along time."""
    if view not in FFT_VIEWS:
        raise ValueError(f"unknown FFT view {view!r}; choose one of {', '.join(FFT_VIEWS)}")
    spectrum = np.fft.rfft(x, axis=-1)
    part = {"magnitude": np.abs, "real": np.real, "imag": np.imag}[view](spectrum)
    return part.astype(np.float32)


@dataclass(frozen=True)
class Preprocessing:
    """What turns a raw record into a cache row; every field is part of the cache key."""

    fs: int = 100
    leads: tuple[str, ...] = STANDARD_LEADS
    seconds: float = 10.0
    bandpass_low: float | None = None
    bandpass_high: float | None = None
    crop: Literal["center", "start"] = "center"

    def __post_init__(self) -> None:
        object.__setattr__(self, "leads", resolve_leads(self.leads))
        if self.fs <= 0 or self.seconds <= 0:
            raise ValueError(f"sampling rate and length must be positive (fs={self.fs}, seconds={self.seconds})")
        if self.crop not in ("center", "start"):
            raise ValueError(f"crop must be 'center' or 'start', not {self.crop!r}")
        if (self.bandpass_low is not None and self.bandpass_high is not None
                and self.bandpass_low >= self.bandpass_high):
            raise ValueError(f"band-pass {self.bandpass_low}-{self.bandpass_high} Hz is empty")

    @property
    def n_samples(self) -> int:
        return round(self.fs * self.seconds)

    def leaves_unchanged(self, fs_in: float, n_samples_in: int) -> bool:
        """Whether :meth:`apply` returns a record of this rate and length as it is (no resampling, filter,
        crop or padding): the cache build then converts such records straight into their rows."""
        return (fs_in == self.fs and n_samples_in == self.n_samples
                and self.bandpass_low is None and self.bandpass_high is None)

    def apply(self, x: np.ndarray, fs_in: float) -> np.ndarray:
        """Resample, filter and fix the length of one ``[leads, samples]`` record (leads already chosen)."""
        y = resample(x, fs_in, self.fs)
        if self.bandpass_low is not None or self.bandpass_high is not None:
            y = bandpass(y, self.fs, self.bandpass_low, self.bandpass_high)
        return np.ascontiguousarray(pad_or_crop(y, self.n_samples, self.crop), dtype=np.float32)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["leads"] = list(self.leads)
        return d
