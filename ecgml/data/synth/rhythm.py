"""Beat timing: sinus rhythm with heart-rate variability, AV conduction (and its blocks), AF.

Why separate from the waveform: a rhythm is a sequence of onsets (P, QRS) and QT intervals; the
morphology model draws the same beat at whatever times this module says. HRV follows the usual
two-band picture: respiratory sinus arrhythmia at the breathing rate (0.15-0.4 Hz) and a Mayer-wave
component near 0.1 Hz (McSharry et al. 2003 model the same two peaks in the RR spectrum).
"""

from __future__ import annotations

import numpy as np

from ecgml.data.synth.model import BeatSchedule, HeartParams

#: Beats start this long before the record so that it opens mid-cycle, with the previous T wave.
LEAD_IN = 2.0
#: Shortest RR the ventricles follow (s): refractoriness caps AF ventricular rates near 200 bpm.
MIN_RR = 0.3


def _sinus_cycles(params: HeartParams, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Atrial (P-P) cycle onsets from -LEAD_IN to past the end, with RSA, LF waves and jitter."""
    mean_rr = 60.0 / params.heart_rate
    n = int(np.ceil((seconds + 2 * LEAD_IN) / (mean_rr * (1.0 - params.rsa - params.lf - 0.05)))) + 2
    approx_t = np.arange(n) * mean_rr
    rr = mean_rr * (
        1.0
        + params.rsa * np.sin(2.0 * np.pi * params.resp_hz * approx_t + rng.uniform(0, 2 * np.pi))
        + params.lf * np.sin(2.0 * np.pi * rng.uniform(0.08, 0.12) * approx_t + rng.uniform(0, 6.3))
        + params.rr_jitter * rng.standard_normal(n)
    )
    rr = np.maximum(rr, MIN_RR)
    onsets = np.concatenate([[0.0], np.cumsum(rr[:-1])]) - LEAD_IN - rng.uniform(0.0, mean_rr)
    return onsets[onsets < seconds + 0.5]


def _conduction(params: HeartParams, p_onset: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """QRS onsets for each P wave (NaN when blocked): fixed PR, or a second-degree block pattern.

    Mobitz I (Wenckebach): PR lengthens by a shrinking increment beat after beat until one P wave is
    not conducted. Mobitz II: constant PR, every ``av_ratio``-th P wave is not conducted.
    """
    n = p_onset.size
    pr = params.pr + rng.normal(0.0, 0.003, n)
    if not params.av_block:
        return p_onset + pr
    position = (np.arange(n) + rng.integers(params.av_ratio)) % params.av_ratio
    blocked = position == params.av_ratio - 1
    if params.av_block == "mobitz1":
        # increments shrink (1, 0.6, 0.36, ...): the classic decreasing-increment Wenckebach pattern
        pr = pr + params.pr_increment * (1.0 - 0.6 ** position) / 0.4
    return np.where(blocked, np.nan, p_onset + pr)


def _afib_onsets(params: HeartParams, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Irregularly irregular ventricular onsets: independent RRs from a gamma law, no P waves."""
    mean_rr = 60.0 / params.heart_rate
    shape = 1.0 / params.rr_cv**2
    n = int(np.ceil((seconds + 2 * LEAD_IN) / (mean_rr * 0.5))) + 4
    rr = np.maximum(rng.gamma(shape, mean_rr / shape, n), MIN_RR)
    onsets = np.concatenate([[0.0], np.cumsum(rr[:-1])]) - LEAD_IN - rng.uniform(0.0, mean_rr)
    return onsets[onsets < seconds + 0.5]


def _qt(params: HeartParams, qrs_onset: np.ndarray) -> np.ndarray:
    """QT of each conducted beat: Bazett from the preceding RR (first beat: the mean RR)."""
    qt = np.full(qrs_onset.size, np.nan)
    conducted = np.flatnonzero(~np.isnan(qrs_onset))
    if conducted.size == 0:
        return qt
    rr = np.diff(qrs_onset[conducted], prepend=qrs_onset[conducted[0]] - 60.0 / params.heart_rate)
    qt[conducted] = params.qtc * np.sqrt(np.clip(rr, 0.3, 2.0)) + params.qt_extra
    return qt


def schedule_beats(params: HeartParams, seconds: float, rng: np.random.Generator) -> BeatSchedule:
    """The onsets of every beat touching ``[0, seconds]``, for the rhythm in ``params``."""
    if params.rhythm == "afib":
        qrs = _afib_onsets(params, seconds, rng)
        p = np.full(qrs.size, np.nan)
    else:
        p = _sinus_cycles(params, seconds, rng)
        qrs = _conduction(params, p, rng)
    return BeatSchedule(p_onset=p, qrs_onset=qrs, qt=_qt(params, qrs))


def _premature_atrial(params: HeartParams, schedule: BeatSchedule, rng: np.random.Generator) -> BeatSchedule:
    """An early conducted beat after every ``ectopic_every``-th cycle, the beats after it delayed by the same
    amount (the sinus node resets at the premature beat)."""
    p, qrs = schedule.p_onset, schedule.qrs_onset
    every = params.ectopic_every
    phase = int(rng.integers(every))
    out_p: list[float] = []
    out_qrs: list[float] = []
    shift = 0.0
    for i in range(p.size):
        out_p.append(p[i] + shift)
        out_qrs.append(qrs[i] + shift)
        if i + 1 < p.size and (i + phase) % every == every - 1:
            early = (p[i + 1] - p[i]) * params.ectopic_coupling
            out_p.append(p[i] + shift + early)
            out_qrs.append(qrs[i] + shift + early)
            shift += early
    p_onset, qrs_onset = np.asarray(out_p), np.asarray(out_qrs)
    return BeatSchedule(p_onset=p_onset, qrs_onset=qrs_onset, qt=_qt(params, qrs_onset))


def _premature_ventricular(params: HeartParams, schedule: BeatSchedule,
                           rng: np.random.Generator) -> tuple[BeatSchedule, BeatSchedule]:
    """The sinus schedule with every ``ectopic_every``-th conducted beat blocked, and the ectopic beats that
    come early in its place (no P wave); the P waves stay, so the pause after an ectopic beat is compensatory."""
    qrs = schedule.qrs_onset.copy()
    conducted = np.flatnonzero(~np.isnan(qrs))
    every = params.ectopic_every
    phase = int(rng.integers(every))
    early: list[float] = []
    for k in range(1, conducted.size):
        if (k + phase) % every == every - 1:
            before, this = conducted[k - 1], conducted[k]
            early.append(qrs[before] + (qrs[this] - qrs[before]) * params.ectopic_coupling)
            qrs[this] = np.nan
    sinus = BeatSchedule(p_onset=schedule.p_onset, qrs_onset=qrs, qt=_qt(params, qrs))
    onsets = np.asarray(early)
    ectopic = params.ectopic if params.ectopic is not None else params
    rr = 60.0 / params.heart_rate * params.ectopic_coupling
    qt = np.full(onsets.size, ectopic.qtc * np.sqrt(np.clip(rr, 0.3, 2.0)) + ectopic.qt_extra)
    return sinus, BeatSchedule(p_onset=np.full(onsets.size, np.nan), qrs_onset=onsets, qt=qt)


def place_ectopic_beats(params: HeartParams, schedule: BeatSchedule,
                        rng: np.random.Generator) -> tuple[BeatSchedule, BeatSchedule | None]:
    """The schedule with the premature beats of ``params.ectopy`` in it, and the ventricular ectopic beats'
    own schedule (drawn with ``params.ectopic``'s waves), or None. Draws nothing without ectopy, so records
    without it are the same as before ectopy existed."""
    if params.ectopy == "atrial":
        return _premature_atrial(params, schedule, rng), None
    if params.ectopy == "ventricular":
        return _premature_ventricular(params, schedule, rng)
    return schedule, None
