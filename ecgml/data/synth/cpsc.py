"""What a CPSC 2018-shaped Challenge tree holds: the China Physiological Signal Challenge 2018 database as the
2020 PhysioNet/CinC Challenge's first release ships it (``A0001.{hea,mat}`` ..., 500 Hz, 6-60 s, nine classes).

The nine classes are the first release's abbreviations (``Normal``, ``AF``, ``I-AVB``, ...), each drawn on the
heart model by the concepts of :mod:`.diagnoses` that show it (AF: no P waves, irregular RR; PVC: early wide
beats; STE: an injury current ...), so the class is learnable from the waveform. Their SNOMED CT codes are never
typed here: the ``#Dx:`` line writes the abbreviation (the first release) or the code the Challenge's tables map
it to (:func:`ecgml.data.dx_mapping.dx_code`, the 2021 dialect), the same tables the reader maps it back with.
Class frequencies are CPSC 2018's training set (Liu et al. 2018, 6,877 records, 476 with two or three labels).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ecgml.data.dx_mapping import DX_DIALECTS, dx_code
from ecgml.data.synth.diagnoses import incompatible

CPSC_RECORDS = 6877
#: Share of CPSC 2018's records with more than one label.
CPSC_MULTI_LABEL = 476 / CPSC_RECORDS
CPSC_FS = 500
#: Record lengths: 6 to 60 s; most records are 10-20 s (median about 13 s, drawn log-normal).
CPSC_MIN_SECONDS, CPSC_MAX_SECONDS, CPSC_MEDIAN_SECONDS = 6.0, 60.0, 13.0
_LENGTH_LOG_SD = 0.45
#: CPSC 2018: 3,699 men of 6,877. Ages: an assumption (the database publishes none summarised).
CPSC_MALE_FRACTION = 3699 / CPSC_RECORDS


@dataclass(frozen=True)
class CpscClass:
    """One of CPSC 2018's nine classes: how the first release writes it, what the heart model draws for it,
    and how many of its training records carry it."""

    abbreviation: str
    concepts: tuple[str, ...]
    count: int

    @property
    def code(self) -> str:
        """The SNOMED CT code the Challenge's tables give the abbreviation."""
        code = dx_code(self.abbreviation)
        if code is None:  # a packaging fault, not a user's: the tables ship with the package
            raise LookupError(f"CPSC class {self.abbreviation!r} is not in the packaged dx_mapping tables")
        return code


CPSC_CLASSES: tuple[CpscClass, ...] = (
    CpscClass("Normal", ("NORM",), 918),
    CpscClass("AF", ("AFIB",), 1098),
    CpscClass("I-AVB", ("1AVB",), 704),
    CpscClass("LBBB", ("CLBBB",), 207),
    CpscClass("RBBB", ("CRBBB",), 1695),
    CpscClass("PAC", ("PAC",), 556),
    CpscClass("PVC", ("PVC",), 672),
    CpscClass("STD", ("STD_",), 825),
    CpscClass("STE", ("STE_",), 202),
)
_BY_ABBREVIATION = {c.abbreviation: c for c in CPSC_CLASSES}


def check_class_weights(weights: Mapping[str, float]) -> None:
    """Refuse a weight for a class CPSC does not have, or a negative one (the CPSC tree's ``priors``)."""
    for name, value in weights.items():
        if name not in _BY_ABBREVIATION:
            raise ValueError(f"prior for unknown CPSC class {name!r}; classes: {', '.join(_BY_ABBREVIATION)}")
        if float(value) < 0:
            raise ValueError(f"prior for {name} must be non-negative, not {value}")
    if sum(class_weights(weights)) <= 0:
        raise ValueError("the CPSC class weights add up to zero")


def class_weights(overrides: Mapping[str, float]) -> np.ndarray:
    """Relative frequency of each class (CPSC 2018's counts), with ``overrides`` (abbreviation -> weight on the
    same scale as a share of records) replacing a class's share."""
    shares = {c.abbreviation: c.count / CPSC_RECORDS for c in CPSC_CLASSES}
    shares.update({k: float(v) for k, v in overrides.items()})
    return np.array([shares[c.abbreviation] for c in CPSC_CLASSES])


def _compatible(candidate: CpscClass, chosen: list[CpscClass]) -> bool:
    return all(not incompatible(a, b) for other in chosen for a in candidate.concepts for b in other.concepts) \
        and candidate not in chosen


def draw_classes(rng: np.random.Generator, weights: np.ndarray) -> list[CpscClass]:
    """One record's classes: one drawn by frequency, and with CPSC's multi-label share a second compatible one
    (never with Normal, never AF with I-AVB or PAC, never LBBB with RBBB, never STD with STE)."""
    p = weights / weights.sum()
    chosen = [CPSC_CLASSES[int(rng.choice(len(CPSC_CLASSES), p=p))]]
    if rng.random() < CPSC_MULTI_LABEL:
        open_ = np.array([w if _compatible(c, chosen) else 0.0 for c, w in zip(CPSC_CLASSES, weights, strict=True)])
        if open_.sum() > 0:
            chosen.append(CPSC_CLASSES[int(rng.choice(len(CPSC_CLASSES), p=open_ / open_.sum()))])
    return chosen


def concepts_of(classes: list[CpscClass]) -> tuple[str, ...]:
    """The heart model's concepts for these classes: theirs, and sinus rhythm unless one is AF."""
    concepts = {concept for c in classes for concept in c.concepts}
    if "AFIB" not in concepts:
        concepts.add("SR")
    return tuple(sorted(concepts))


def classes_of(concepts: tuple[str, ...]) -> list[CpscClass]:
    """The classes a plan's concepts show (in CPSC_CLASSES order)."""
    present = set(concepts)
    return [c for c in CPSC_CLASSES if set(c.concepts) <= present]


def draw_seconds(rng: np.random.Generator, longest: float) -> float:
    """A record's length: log-normal around CPSC's median, within 6 s and ``longest``, in whole samples."""
    seconds = float(np.clip(rng.lognormal(np.log(CPSC_MEDIAN_SECONDS), _LENGTH_LOG_SD), CPSC_MIN_SECONDS, longest))
    return round(seconds * CPSC_FS) / CPSC_FS


def dx_entries(concepts: tuple[str, ...], dialect: str) -> list[str]:
    """The ``#Dx:`` entries of a record in ``dialect``: abbreviations (``AF``, ``RBBB``) or SNOMED CT codes."""
    if dialect not in DX_DIALECTS:
        raise ValueError(f"Dx dialect must be one of {', '.join(DX_DIALECTS)}, not {dialect!r}")
    classes = classes_of(concepts)
    return [c.abbreviation if dialect == "abbreviation" else c.code for c in classes]
