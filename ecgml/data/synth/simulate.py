"""One synthetic record from its concepts: patient, diagnoses, rhythm, waveform, acquisition.

Randomness is split into independent streams (patient, rules, rhythm, rendering, noise) spawned from
one seed, so a record is the same whatever else is generated, in whatever process and order, and the
records of one patient share a heart (the patient stream) while differing in everything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ecgml.data.synth.diagnoses import apply_diagnoses
from ecgml.data.synth.model import (
    BeatSchedule,
    HeartParams,
    fibrillatory_waves,
    frontal_axis,
    render,
    sample_patient,
    twelve_from_eight,
)
from ecgml.data.synth.noise import NoiseConfig, NoiseReport, add_noise
from ecgml.data.synth.rhythm import place_ectopic_beats, schedule_beats

SeedLike = int | np.random.SeedSequence


@dataclass(frozen=True)
class SimulatedEcg:
    """A generated record: ``signal`` is ``float32[12, n]`` mV in STANDARD_LEADS order."""

    signal: np.ndarray
    fs: float
    params: HeartParams
    schedule: BeatSchedule
    concepts: frozenset[str]
    noise: NoiseReport
    axis: float  # frontal QRS axis of the model (degrees)
    ectopic: BeatSchedule | None = None  # the ventricular ectopic beats, drawn with ``params.ectopic``'s waves


def _sequence(seed: SeedLike) -> np.random.SeedSequence:
    return seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)


def simulate(
    concepts: Iterable[str],
    seed: SeedLike,
    *,
    patient_seed: SeedLike | None = None,
    age: float = 60.0,
    sex: str = "M",
    fs: float = 500.0,
    seconds: float = 10.0,
    noise: NoiseConfig | None = None,
    heart_rate: float | None = None,
) -> SimulatedEcg:
    """Generate one record with the given concepts (see :data:`~ecgml.data.synth.diagnoses.DIAGNOSES`).

    ``patient_seed`` fixes the heart (several records of one patient share it); by default it comes
    from ``seed``. ``noise=None`` gives the noise-free model output at unit gain. ``heart_rate``
    overrides the rate after the rhythm rule (for measurements that need isolated waves).
    """
    concept_set = frozenset(concepts)
    streams = _sequence(seed).spawn(5)
    patient_rng = np.random.default_rng(_sequence(patient_seed) if patient_seed is not None else streams[0])
    rule_rng, rhythm_rng, render_rng, noise_rng = (np.random.default_rng(s) for s in streams[1:])
    params = sample_patient(patient_rng, age, sex)
    params.heart_rate = float(np.clip(params.heart_rate + rule_rng.normal(0.0, 4.0), 62.0, 97.0))
    apply_diagnoses(params, concept_set, rule_rng)
    if heart_rate is not None:
        params.heart_rate = float(heart_rate)
    schedule, ectopic = place_ectopic_beats(params, schedule_beats(params, seconds, rhythm_rng), rhythm_rng)
    n = round(seconds * fs)
    eight = render(params, schedule, fs, n, render_rng)
    if ectopic is not None and params.ectopic is not None:
        eight += render(params.ectopic, ectopic, fs, n, render_rng)
    if params.rhythm == "afib":
        eight += fibrillatory_waves(params, fs, n, render_rng)
    eight, report = add_noise(eight, fs, noise or NoiseConfig.off(), noise_rng, params.resp_hz)
    signal = twelve_from_eight(eight).astype(np.float32)
    return SimulatedEcg(signal, fs, params, schedule, concept_set, report, frontal_axis(params), ectopic)
