"""Noise-free synthetic records and their measured beats, shared by the synth tests."""

from __future__ import annotations

from collections.abc import Iterable

from ecgml.data.synth import measure
from ecgml.data.synth.simulate import SimulatedEcg, simulate

#: Seeds used for rule checks: enough patients to catch a rule that holds only sometimes.
SEEDS = tuple(range(8))


def clean(concepts: Iterable[str], seed: int, heart_rate: float | None = 60.0) -> SimulatedEcg:
    """A noise-free record at a fixed rate (isolated waves); the same seed is the same patient."""
    return simulate(concepts, seed, age=60.0, sex="M", heart_rate=heart_rate)


def middle_beat(ecg: SimulatedEcg) -> measure.Beat:
    beats = measure.measure_record(ecg.signal, ecg.fs, ecg.schedule)
    assert beats, "no complete beat measured"
    return beats[len(beats) // 2]


def pair(concepts: Iterable[str], seed: int) -> tuple[tuple[SimulatedEcg, measure.Beat],
                                                     tuple[SimulatedEcg, measure.Beat]]:
    """The same patient drawn normal and with ``concepts``: paired comparisons need no population norms."""
    normal = clean(["SR", "NORM"], seed)
    sick = clean(["SR", *concepts], seed)
    return (normal, middle_beat(normal)), (sick, middle_beat(sick))
