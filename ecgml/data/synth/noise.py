"""Acquisition: recorder gain and the noise of real recordings, different per source on purpose.

Why per electrode: a lead is a difference of electrode potentials (I = LA - RA, V1 = V1 - Wilson's
central terminal), so noise is generated at the nine electrodes and mapped to the leads as the recorder
does. A moving left arm then disturbs I, III, aVL and every V lead (through the central terminal)
exactly as it would in a real record, and the derived limb leads stay consistent.

Components: baseline wander from respiration (at the same rate as the sinus arrhythmia) and slow
movement; powerline interference (50 Hz in Germany for PTB-XL, 60 Hz in Georgia, USA; it only
survives where the sampling rate carries it: PTB-XL's 100 Hz files are decimated with an anti-alias
filter and lose it, as the real ones did); EMG (broadband muscle noise) with occasional bursts; and
electrode artefacts (a contact "pop": a step that decays). Source shift is in the defaults:
:data:`PTBXL_NOISE` and :data:`G12EC_NOISE`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np

#: Electrodes in the order noise is generated.
ELECTRODES: tuple[str, ...] = ("RA", "LA", "LL", "V1", "V2", "V3", "V4", "V5", "V6")
_LIMB_ELECTRODES = frozenset({"RA", "LA", "LL"})


@dataclass(frozen=True)
class NoiseConfig:
    """Recorder gain and noise of one source. Amplitudes in mV, probabilities per record."""

    gain: float = 1.0                    # mean recorder/torso gain applied to the clean ECG
    gain_jitter: float = 0.0             # log-normal s.d. of the per-record gain
    respiration_mv: tuple[float, float] = (0.0, 0.0)   # respiratory baseline wander, per electrode
    wander_mv: tuple[float, float] = (0.0, 0.0)        # slow random baseline wander, per electrode
    movement_prob: float = 0.0           # probability of a large movement drift on some electrodes
    movement_mv: tuple[float, float] = (0.2, 0.6)
    powerline_hz: float = 50.0
    powerline_prob: float = 0.0
    powerline_mv: tuple[float, float] = (0.005, 0.04)
    emg_mv: tuple[float, float] = (0.0, 0.0)           # s.d. of background muscle noise
    static_prob: float = 0.0             # probability of sustained muscle noise (flagged static_noise)
    static_mv: tuple[float, float] = (0.015, 0.04)
    burst_prob: float = 0.0
    burst_mv: tuple[float, float] = (0.04, 0.12)
    electrode_prob: float = 0.0
    electrode_mv: tuple[float, float] = (0.4, 1.5)

    def __post_init__(self) -> None:
        for name in ("movement_prob", "powerline_prob", "static_prob", "burst_prob", "electrode_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"NoiseConfig.{name} must be a probability, not {value}")
        if self.gain <= 0 or self.gain_jitter < 0:
            raise ValueError("NoiseConfig.gain must be positive and gain_jitter non-negative")

    @classmethod
    def off(cls) -> NoiseConfig:
        """No noise and unit gain: the model's own waveform, for measurements and tests."""
        return cls()

    @property
    def silent(self) -> bool:
        return self == NoiseConfig(gain=self.gain) and self.gain_jitter == 0.0


#: PTB-XL-like: German mains, cleaner baseline (resting, supine, filtered devices), modest EMG.
PTBXL_NOISE = NoiseConfig(
    gain=1.0, gain_jitter=0.06, respiration_mv=(0.01, 0.06), wander_mv=(0.01, 0.05),
    movement_prob=0.08, powerline_hz=50.0, powerline_prob=0.25, emg_mv=(0.002, 0.008),
    static_prob=0.15, burst_prob=0.03, electrode_prob=0.01,
)
#: Georgia-like: US mains, more baseline wander and muscle noise, a different gain distribution.
G12EC_NOISE = NoiseConfig(
    gain=1.12, gain_jitter=0.10, respiration_mv=(0.02, 0.12), wander_mv=(0.02, 0.10),
    movement_prob=0.15, powerline_hz=60.0, powerline_prob=0.35, emg_mv=(0.003, 0.012),
    static_prob=0.25, burst_prob=0.06, electrode_prob=0.02,
)
#: CPSC 2018-like: Chinese mains (50 Hz), otherwise Georgia's hospital-recording noise.
CPSC_NOISE = replace(G12EC_NOISE, powerline_hz=50.0)


@dataclass(frozen=True)
class NoiseReport:
    """Which noise a record got, in PTB-XL's own column formats (empty string: none)."""

    gain: float = 1.0
    baseline_drift: str = ""
    static_noise: str = ""
    burst_noise: str = ""
    electrodes_problems: str = ""
    powerline: bool = False


@cache
def _electrode_to_leads() -> np.ndarray:
    """``float64[8, 9]``: electrode potentials -> leads I, II, V1..V6 (Wilson's central terminal)."""
    m = np.zeros((8, 9))
    m[0, 0], m[0, 1] = -1.0, 1.0          # I = LA - RA
    m[1, 0], m[1, 2] = -1.0, 1.0          # II = LL - RA
    for k in range(6):
        m[2 + k, 3 + k] = 1.0
        m[2 + k, :3] = -1.0 / 3.0
    m.setflags(write=False)
    return m


@cache
def _wander_basis(fs: float, n_samples: int) -> np.ndarray:
    """Sines and cosines at 0.05-0.5 Hz, weighted 1/sqrt(f): random mixes are smooth baseline drift."""
    t = np.arange(n_samples) / fs
    freqs = np.arange(0.05, 0.51, 0.05)
    phases = 2.0 * np.pi * freqs[:, None] * t[None, :]
    basis = np.vstack([np.sin(phases), np.cos(phases)]) / np.sqrt(np.tile(freqs, 2))[:, None]
    basis /= np.sqrt((basis**2).mean(axis=1, keepdims=True) * basis.shape[0])
    basis.setflags(write=False)
    return basis


def _lead_spec(electrodes: list[str], separator: str = ",") -> str:
    """Which leads an electrode disturbance shows in, written as PTB-XL's annotators did."""
    if not electrodes:
        return ""
    limbs = [e for e in electrodes if e in _LIMB_ELECTRODES]
    chest = [e for e in electrodes if e not in _LIMB_ELECTRODES]
    if limbs and (chest or len(limbs) > 1):
        return "alles"
    if limbs:
        return "I-AVF"
    return separator.join(chest)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int | None = None) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], size)


def add_noise(eight: np.ndarray, fs: float, config: NoiseConfig, rng: np.random.Generator,
              resp_hz: float) -> tuple[np.ndarray, NoiseReport]:
    """Scale the clean 8 independent leads by the recorder gain and add electrode noise."""
    gain = float(config.gain * rng.lognormal(0.0, config.gain_jitter)) if config.gain_jitter else config.gain
    if config.silent:
        return eight * gain, NoiseReport(gain=gain)
    n = eight.shape[1]
    t = np.arange(n) / fs
    noise = np.zeros((9, n))
    report: dict[str, object] = {"gain": gain}

    respiration = np.sin(2.0 * np.pi * resp_hz * t + rng.uniform(0, 2 * np.pi))
    noise += np.outer(_uniform(rng, config.respiration_mv, 9) * rng.choice([-1, 1], 9), respiration)
    basis = _wander_basis(fs, n)
    noise += (rng.standard_normal((9, basis.shape[0])) * _uniform(rng, config.wander_mv, 9)[:, None]) @ basis

    if rng.random() < config.movement_prob:
        moved = sorted(rng.choice(9, size=int(rng.integers(1, 4)), replace=False).tolist())
        drift = rng.standard_normal((len(moved), basis.shape[0])) @ basis
        noise[moved] += drift * _uniform(rng, config.movement_mv, len(moved))[:, None] * 2.0
        report["baseline_drift"] = " , " + _lead_spec([ELECTRODES[i] for i in moved])

    if rng.random() < config.powerline_prob:
        phase = 2.0 * np.pi * config.powerline_hz * t + rng.uniform(0, 2 * np.pi)
        hum = np.sin(phase) + 0.15 * np.sin(3.0 * phase)
        noise += np.outer(_uniform(rng, config.powerline_mv, 9), hum)
        report["powerline"] = True

    emg_sd = _uniform(rng, config.emg_mv, 9) * np.array([1.5, 1.5, 1.2, 1, 1, 1, 1, 1, 1])
    if rng.random() < config.static_prob:  # a tense patient: arms (limb leads) or everywhere
        loud = [0, 1, 2] if rng.random() < 0.6 else list(range(9))
        emg_sd[loud] = _uniform(rng, config.static_mv, len(loud))
        report["static_noise"] = f" , {'I-AVF' if len(loud) == 3 else 'alles'},  "
    white = rng.standard_normal((9, n + 1))
    emg = (white[:, 1:] - white[:, :-1]) / np.sqrt(2.0)  # first difference: muscle noise is high-pitched
    noise += emg * emg_sd[:, None]

    if rng.random() < config.burst_prob:
        hit = sorted(rng.choice(9, size=int(rng.integers(1, 3)), replace=False).tolist())
        length = int(rng.uniform(0.4, 2.0) * fs)
        start = int(rng.integers(0, max(1, n - length)))
        window = np.hanning(length) * _uniform(rng, config.burst_mv)
        noise[hit, start:start + length] += emg[hit, start:start + length] * window[: n - start]
        report["burst_noise"] = _lead_spec([ELECTRODES[i] for i in hit])

    if rng.random() < config.electrode_prob:
        e = int(rng.integers(0, 9))
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, n))
            tau = rng.uniform(0.15, 0.8)
            pop = np.exp(-(np.arange(n - at) / fs) / tau) * _uniform(rng, config.electrode_mv)
            noise[e, at:] += pop * rng.choice([-1.0, 1.0])
        report["electrodes_problems"] = ELECTRODES[e] if e >= 3 else {0: "I", 1: "aVL", 2: "aVF"}[e]

    return eight * gain + _electrode_to_leads() @ noise, NoiseReport(**report)  # type: ignore[arg-type]
