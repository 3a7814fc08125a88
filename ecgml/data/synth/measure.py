"""Fiducial measurements on a clean 12-lead signal: onsets and offsets, intervals, axis, voltages.

Why here: the generator's promise is that its labels are measurable on its waveforms (PR > 200 ms for
1AVB, QRS >= 120 ms for complete bundle-branch block, ...). These plain threshold methods check that
promise in the tests and compare the waveform with other simulators in the benchmark. They are meant
for noise-free output; beats are located with the schedule the model returns (``qrs_anchor``), the
boundaries themselves are found on the signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.synth.model import BeatSchedule

_LEAD = {name: i for i, name in enumerate(STANDARD_LEADS)}
#: QRS boundaries: where the spatial velocity falls below this share of the beat's peak velocity.
QRS_VELOCITY_THRESHOLD = 0.08
#: P and T boundaries: where the spatial magnitude falls below this share of the wave's peak.
WAVE_MAGNITUDE_THRESHOLD = 0.05


@dataclass(frozen=True)
class Beat:
    """One beat's fiducial points (seconds from the record start; NaN where not found)."""

    qrs_onset: float
    qrs_offset: float
    p_onset: float
    p_offset: float
    t_end: float

    @property
    def qrs_duration(self) -> float:
        return self.qrs_offset - self.qrs_onset

    @property
    def pr(self) -> float:
        return self.qrs_onset - self.p_onset

    @property
    def p_duration(self) -> float:
        return self.p_offset - self.p_onset

    @property
    def qt(self) -> float:
        return self.t_end - self.qrs_onset


def spatial_velocity(signal: np.ndarray, fs: float) -> np.ndarray:
    """Norm over leads of the first difference (mV/s), aligned to samples (first value repeated)."""
    d = np.diff(signal, axis=1, prepend=signal[:, :1]) * fs
    return np.sqrt((d**2).sum(axis=0))


def spatial_magnitude(signal: np.ndarray) -> np.ndarray:
    return np.sqrt((signal**2).sum(axis=0))


def _run_around(mask: np.ndarray, center: int, max_gap: int) -> tuple[int, int]:
    """The stretch of True around ``center`` in ``mask``, bridging False gaps up to ``max_gap``."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return center, center
    gaps = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.concatenate([[idx[0]], idx[gaps + 1]])
    ends = np.concatenate([idx[gaps], [idx[-1]]])
    k = int(np.clip(np.searchsorted(starts, center, side="right") - 1, 0, starts.size - 1))
    return int(starts[k]), int(ends[k])


def qrs_bounds(signal: np.ndarray, fs: float, anchor: float) -> tuple[float, float]:
    """QRS onset and offset (s) of the beat whose QRS starts near ``anchor``."""
    lo = max(int((anchor - 0.04) * fs), 1)
    hi = min(int((anchor + 0.24) * fs), signal.shape[1])
    v = spatial_velocity(signal[:, lo - 1:hi], fs)[1:]
    peak = int(np.argmax(v))
    start, end = _run_around(v >= QRS_VELOCITY_THRESHOLD * v[peak], peak, int(0.02 * fs))
    return (lo + start) / fs, (lo + end) / fs


def _wave_bounds(m: np.ndarray, threshold: float, max_gap: int) -> tuple[int, int, int]:
    """Start, peak and end of the wave around the maximum of ``m`` (notches up to ``max_gap`` bridged)."""
    peak = int(np.argmax(m))
    start, end = _run_around(m >= threshold * m[peak], peak, max_gap)
    return start, peak, end


def measure_beat(signal: np.ndarray, fs: float, qrs_anchor: float, p_anchor: float | None,
                 next_onset: float) -> Beat:
    """Fiducial points of one beat. ``p_anchor``: its P onset from the schedule (None: no P wave);
    ``next_onset``: where the next beat starts (bounds the T-wave search).
    """
    on, off = qrs_bounds(signal, fs, qrs_anchor)
    p_on = p_off = float("nan")
    if p_anchor is not None and not np.isnan(p_anchor):
        lo = max(int((p_anchor - 0.05) * fs), 0)
        hi = int((on - 0.005) * fs)
        if hi - lo > 5:
            s, _, e = _wave_bounds(spatial_magnitude(signal[:, lo:hi]), WAVE_MAGNITUDE_THRESHOLD,
                                   int(0.03 * fs))
            p_on, p_off = (lo + s) / fs, (lo + e) / fs
    lo = int((off + 0.04) * fs)
    hi = min(int(next_onset * fs), signal.shape[1])
    t_end = float("nan")
    if hi - lo > 10:
        _, _, e = _wave_bounds(spatial_magnitude(signal[:, lo:hi]), WAVE_MAGNITUDE_THRESHOLD,
                               int(0.03 * fs))
        t_end = (lo + e) / fs
    return Beat(on, off, p_on, p_off, t_end)


def measure_record(signal: np.ndarray, fs: float, schedule: BeatSchedule) -> list[Beat]:
    """Measure every conducted beat lying wholly inside the record."""
    qrs = np.asarray(schedule.qrs_onset)
    p = np.asarray(schedule.p_onset)
    seconds = signal.shape[1] / fs
    starts = np.where(np.isnan(p), qrs, p)
    beats = []
    for i in np.flatnonzero(~np.isnan(qrs)):
        first = p[i] if not np.isnan(p[i]) else qrs[i]
        later = starts[i + 1:][starts[i + 1:] > qrs[i] + 0.2]
        next_onset = float(later[0]) if later.size else seconds
        if first < 0.3 or next_onset > seconds - 0.05:
            continue
        beats.append(measure_beat(signal, fs, float(qrs[i]), float(p[i]), next_onset))
    return beats


def detect_qrs(signal: np.ndarray, fs: float, refractory: float = 0.25) -> np.ndarray:
    """QRS times (s) found on the signal alone: peaks of the spatial velocity of the signal with its
    40 ms moving average removed (which keeps the fast QRS and drops the slow P and T waves), above
    30 % of the maximum.
    """
    width = max(int(0.04 * fs), 1)
    kernel = np.ones(width) / width
    smooth = np.stack([np.convolve(x, kernel, mode="same") for x in signal])
    v = spatial_velocity(signal - smooth, fs)
    candidates = np.flatnonzero((v[1:-1] >= v[:-2]) & (v[1:-1] > v[2:]) & (v[1:-1] > 0.3 * v.max())) + 1
    peaks: list[int] = []
    for c in candidates[np.argsort(-v[candidates])]:
        if all(abs(c - p) > refractory * fs for p in peaks):
            peaks.append(int(c))
    return np.sort(np.array(peaks, dtype=float)) / fs


def lead(signal: np.ndarray, name: str) -> np.ndarray:
    return signal[_LEAD[name]]


def qrs_area(signal: np.ndarray, fs: float, beat: Beat, name: str) -> float:
    """Net QRS area (mV s) of one lead over the measured QRS."""
    a, b = int(beat.qrs_onset * fs), int(beat.qrs_offset * fs) + 1
    return float(lead(signal, name)[a:b].sum() / fs)


def frontal_axis(signal: np.ndarray, fs: float, beat: Beat) -> float:
    """Frontal QRS axis (degrees) from the net QRS areas of leads I and aVF."""
    return float(np.degrees(np.arctan2(qrs_area(signal, fs, beat, "aVF"), qrs_area(signal, fs, beat, "I"))))


def qrs_extremes(signal: np.ndarray, fs: float, beat: Beat, name: str) -> tuple[float, float]:
    """(largest positive, most negative) QRS deflection of one lead relative to the PR baseline."""
    a, b = int(beat.qrs_onset * fs), int(beat.qrs_offset * fs) + 1
    x = lead(signal, name) - baseline(signal, fs, beat, name)
    return float(x[a:b].max()), float(x[a:b].min())


def baseline(signal: np.ndarray, fs: float, beat: Beat, name: str) -> float:
    """Isoelectric level: mean of the 10-30 ms before QRS onset."""
    a, b = int((beat.qrs_onset - 0.03) * fs), int((beat.qrs_onset - 0.01) * fs)
    return float(lead(signal, name)[a:b].mean())


def st_level(signal: np.ndarray, fs: float, beat: Beat, name: str, after_j: float = 0.06) -> float:
    """ST deviation (mV) of one lead at J + ``after_j`` relative to the isoelectric level."""
    return float(lead(signal, name)[int((beat.qrs_offset + after_j) * fs)] - baseline(signal, fs, beat, name))


def t_peak(signal: np.ndarray, fs: float, beat: Beat, name: str) -> float:
    """Signed T-wave peak (mV) of one lead between J + 80 ms and the T end."""
    a, b = int((beat.qrs_offset + 0.08) * fs), int(beat.t_end * fs) + 1
    x = lead(signal, name)[a:b] - baseline(signal, fs, beat, name)
    return float(x[np.argmax(np.abs(x))]) if x.size else float("nan")


def sokolow_lyon(signal: np.ndarray, fs: float, beat: Beat) -> float:
    """S(V1) + max(R(V5), R(V6)) in mV."""
    return -qrs_extremes(signal, fs, beat, "V1")[1] + max(qrs_extremes(signal, fs, beat, "V5")[0],
                                                           qrs_extremes(signal, fs, beat, "V6")[0])


def qtc_bazett(qt: float, rr: float) -> float:
    return qt / np.sqrt(rr)
