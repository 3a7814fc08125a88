"""Which diagnoses a synthetic record has (priors), and how each tree writes them down (encodings).

Priors of the 18 shared classes are read from the label-map CSVs (``ptbxl_count / 21837``,
``georgia_count / 10344``), never re-typed; the two maps together also say how a class is coded
(e.g. the share of Georgia's complete RBBBs coded 713427006 rather than 59118001 is the seed map's
count over the challenge map's). Other concepts (NORM, rhythms, infarcts, ...) use the published
statement counts of PTB-XL v1.0.1 and the Georgia column of the Challenge's ``dx_mapping`` tables,
typed below with their source.

Sampling: a rhythm; then NORM with its prior, or else a set of diagnoses from independent draws,
calibrated so each concept's marginal matches its prior given that an abnormal record has at least one
(real diagnoses co-occur, so plain independence would leave too few normal records); incompatible
pairs are resolved in a random order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from ecgml.data.labels import SINUS_RHYTHM, load_label_map
from ecgml.data.synth.diagnoses import DIAGNOSES, incompatible

PTBXL_RECORDS = 21837   # PTB-XL v1.0.1, the denominator of the label map's ptbxl_count
GEORGIA_RECORDS = 10344  # G12EC (Challenge 2020/2021), the denominator of georgia_count
SOURCES = ("ptbxl", "g12ec")

RHYTHMS: tuple[str, ...] = ("SR", "STACH", "SBRAD", "SARRH", "AFIB")
MI_CONCEPTS = ("IMI", "ILMI", "ASMI", "AMI", "ALMI")
ISCHEMIA = ("ISCAN", "ISCIN", "ISCLA", "ISC_")

#: PTB-XL v1.0.1 statement counts (of 21,837) for concepts outside the shared classes.
_PTBXL_EXTRA_COUNTS = {
    "NORM": 9528, "STACH": 826, "SBRAD": 637, "SARRH": 772, "AFIB": 1514,
    "IMI": 2685, "ILMI": 479, "ASMI": 2363, "AMI": 354, "ALMI": 290,
    "ISC_": 1275, "NST_": 770, "LVOLT": 182,
}
#: Georgia counts (of 10,344) from the Challenge 2021 dx_mapping tables: SB, STach, SA, AF, LQRSV,
#: QAb (Georgia's way of saying "infarct Q waves": it codes MI itself 7 times).
_GEORGIA_EXTRA_COUNTS = {
    "STACH": 1261, "SBRAD": 1677, "SARRH": 455, "AFIB": 570, "LVOLT": 374, "MI": 464,
}
_GEORGIA_NSR_COUNT = 1752  # records Georgia codes 426783006 (sinus rhythm)
#: Assumptions where neither source publishes a number: Georgia has no "normal ECG" statement; a
#: fifth of its records carry no diagnosis beyond rhythm. ST abnormality (164930006) for ISC_.
_GEORGIA_NORM = 0.20
_GEORGIA_ISC = 0.05
#: Standalone fragmented QRS (ABQRS without an infarct); with an infarct it comes with ABQRS_WITH_MI.
_ABQRS_ALONE = {"ptbxl": 800 / PTBXL_RECORDS, "g12ec": 0.0}
ABQRS_WITH_MI = 0.45
#: How a T-wave abnormality looks (T_FLAT -> LOWT, T_INV -> INVT/TAB_, T_NONSPEC -> NT_).
T_VARIANTS = {"T_FLAT": 0.35, "T_INV": 0.25, "T_NONSPEC": 0.40}
LVH_STRAIN = 0.4
MI_TINV = 0.35
#: A later record of the same patient keeps the earlier diagnoses with this probability.
PERSISTENCE = 0.7


def default_priors(source: str) -> dict[str, float]:
    """Concept -> probability that a record has it, for a PTB-XL-like or a Georgia-like tree."""
    return dict(_default_priors(source))


@cache
def _default_priors(source: str) -> dict[str, float]:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    lmap = load_label_map("challenge")
    seed_map = load_label_map("seed")
    if source == "ptbxl":
        priors = {c: lmap.ptbxl_counts[c] / PTBXL_RECORDS for c in lmap.classes}
        priors.update({k: v / PTBXL_RECORDS for k, v in _PTBXL_EXTRA_COUNTS.items()})
    else:
        priors = {c: lmap.georgia_counts[c] / GEORGIA_RECORDS for c in lmap.classes}
        counts = dict(_GEORGIA_EXTRA_COUNTS)
        mi_total = counts.pop("MI")
        ptbxl_mi = sum(_PTBXL_EXTRA_COUNTS[m] for m in MI_CONCEPTS)
        for m in MI_CONCEPTS:  # Georgia's infarcts split like PTB-XL's
            priors[m] = mi_total * _PTBXL_EXTRA_COUNTS[m] / ptbxl_mi / GEORGIA_RECORDS
        priors.update({k: v / GEORGIA_RECORDS for k, v in counts.items()})
        # Georgia's nonspecific ST-T abnormality (428750005) is the seed map's NDT code.
        priors["NST_"] = seed_map.georgia_counts["NDT"] / GEORGIA_RECORDS
        priors["NORM"] = _GEORGIA_NORM
        priors["ISC_"] = _GEORGIA_ISC
    priors["ABQRS"] = _ABQRS_ALONE[source]
    return priors


@dataclass(frozen=True)
class Priors:
    """Validated priors for one tree, with the draw probabilities calibrated from them."""

    source: str
    probabilities: Mapping[str, float]
    conditional: Mapping[str, float] = field(repr=False, default_factory=dict)

    @classmethod
    def build(cls, source: str, overrides: Mapping[str, float] | None = None) -> Priors:
        """Default priors of ``source`` with ``overrides`` (concept -> probability) applied."""
        probabilities = dict(default_priors(source))
        for name, value in (overrides or {}).items():
            if name not in DIAGNOSES or name == "SR":
                raise ValueError(
                    f"prior for unknown concept {name!r}; concepts: "
                    f"{', '.join(sorted(set(DIAGNOSES) - {'SR'}))} (SR is the remainder of the rhythms)")
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"prior for {name} must be a probability in [0, 1], not {value}")
            probabilities[name] = float(value)
        if sum(probabilities[r] for r in RHYTHMS[1:]) > 1.0:
            raise ValueError("the non-sinus rhythm priors add up to more than 1")
        if probabilities["NORM"] >= 1.0:
            raise ValueError("NORM prior must be below 1")
        return cls(source, probabilities, _calibrate(probabilities))

    @property
    def rhythm_probabilities(self) -> np.ndarray:
        """Marginal rhythm probabilities, in RHYTHMS order (SR is the remainder)."""
        others = np.array([self.probabilities[r] for r in RHYTHMS[1:]])
        return np.concatenate([[1.0 - others.sum()], others])

    def rhythm_given(self, normal: bool) -> np.ndarray:
        """Rhythm probabilities for a NORM or an abnormal record: AF never comes with NORM, so the
        abnormal records carry all of it, and the sinus rhythms keep their marginals.
        """
        p = self.rhythm_probabilities
        afib = RHYTHMS.index("AFIB")
        q_afib = 0.0 if normal else min(p[afib] / max(1.0 - self.probabilities["NORM"], 1e-9), 1.0)
        sinus = p / max(1.0 - p[afib], 1e-9) * (1.0 - q_afib)
        sinus[afib] = q_afib
        return sinus / sinus.sum()

    @property
    def diagnostic_concepts(self) -> tuple[str, ...]:
        return tuple(self.conditional)


def _calibrate(probabilities: Mapping[str, float]) -> dict[str, float]:
    """Per-concept draw probabilities q_i for abnormal records such that P(i | >= 1 drawn) equals
    p_i / (1 - p_NORM): q_i = t_i * s with s = 1 - prod(1 - t_i * s), solved by bisection.
    """
    abnormal = 1.0 - probabilities["NORM"]
    names = [c for c, d in DIAGNOSES.items() if d.kind == "diagnostic" and c != "NORM"]
    targets = np.array([min(probabilities.get(c, 0.0) / abnormal, 0.95) for c in names])
    if targets.sum() == 0:
        return dict.fromkeys(names, 0.0)
    lo, hi = 1e-9, 1.0
    for _ in range(60):
        s = 0.5 * (lo + hi)
        at_least_one = 1.0 - np.prod(1.0 - np.minimum(targets * s, 1.0))
        lo, hi = (s, hi) if at_least_one > s else (lo, s)
    q = np.minimum(targets * 0.5 * (lo + hi), 1.0)
    return dict(zip(names, q.tolist(), strict=True))


def _compatible(concept: str, chosen: list[str]) -> bool:
    return not any(incompatible(concept, other) for other in chosen)


def sample_concepts(rng: np.random.Generator, priors: Priors,
                    previous: frozenset[str] | None = None) -> frozenset[str]:
    """One record's concepts: a rhythm, NORM or diagnoses, form findings and drawing modifiers.

    ``previous`` (an earlier record of the same patient) is kept with probability PERSISTENCE.
    """
    def draw_rhythm(normal: bool) -> str:
        return RHYTHMS[int(rng.choice(len(RHYTHMS), p=priors.rhythm_given(normal)))]

    if previous is not None and rng.random() < PERSISTENCE:
        kept = [c for c in previous if c not in RHYTHMS]
        rhythm = draw_rhythm("NORM" in kept)
        return frozenset([rhythm, *(c for c in kept if not incompatible(c, rhythm))])
    p = priors.probabilities
    if rng.random() < p["NORM"]:
        rhythm = draw_rhythm(True)
        chosen = ["NORM"]
        if rng.random() < p["LVOLT"]:
            chosen.append("LVOLT")
        return frozenset([rhythm, *chosen])
    rhythm = draw_rhythm(False)
    names = priors.diagnostic_concepts
    q = np.array([priors.conditional[c] for c in names])
    drawn: list[str] = []
    for _ in range(100):
        drawn = [names[i] for i in np.flatnonzero(rng.random(q.size) < q)]
        if drawn or q.sum() == 0:
            break
    chosen = [rhythm]
    for i in rng.permutation(len(drawn)):
        if _compatible(drawn[i], chosen):
            chosen.append(drawn[i])
    chosen.extend(_forms_and_modifiers(rng, p, chosen))
    return frozenset(chosen)


def _forms_and_modifiers(rng: np.random.Generator, p: Mapping[str, float], chosen: list[str]) -> list[str]:
    extra: list[str] = []
    has_mi = any(m in chosen for m in MI_CONCEPTS)
    if rng.random() < (ABQRS_WITH_MI if has_mi else p["ABQRS"]):
        extra.append("ABQRS")
    if "LVH" not in chosen and rng.random() < p["LVOLT"]:
        extra.append("LVOLT")
    if "NDT" in chosen:
        variants = list(T_VARIANTS)
        extra.append(variants[int(rng.choice(len(variants), p=list(T_VARIANTS.values())))])
    if "LVH" in chosen and rng.random() < LVH_STRAIN:
        extra.append("LVH_STRAIN")
    if has_mi and rng.random() < MI_TINV:
        extra.append("MI_TINV")
    return extra


# --- PTB-XL encoding ----------------------------------------------------------------------------------

_LIKELY = ((100.0, 0.93), (80.0, 0.02), (50.0, 0.05))
_NORM_LIKELIHOOD = ((100.0, 0.75), (80.0, 0.18), (50.0, 0.05), (35.0, 0.01), (15.0, 0.01))
#: Infarcts, LVH and non-specific ischaemia carry the widest spread of likelihoods in PTB-XL.
_UNCERTAIN = ((100.0, 0.45), (80.0, 0.07), (50.0, 0.25), (35.0, 0.07), (15.0, 0.16))
_UNCERTAIN_CONCEPTS = frozenset({*MI_CONCEPTS, "LVH", "ISC_"})


@cache
def _coding_shares() -> dict[str, float]:
    """How often a class is written with its own statement (PTB-XL) or its rarer code (Georgia),
    from the two label maps' counts.
    """
    challenge, seed = load_label_map("challenge"), load_label_map("seed")
    return {
        "LVH_statement": seed.ptbxl_counts["LVH"] / challenge.ptbxl_counts["LVH"],
        "NDT_statement": seed.ptbxl_counts["NDT"] / challenge.ptbxl_counts["NDT"],
    }


def _likelihood(rng: np.random.Generator, table: tuple[tuple[float, float], ...]) -> float:
    values, weights = zip(*table, strict=True)
    return float(values[int(rng.choice(len(values), p=np.array(weights) / sum(weights)))])


def ptbxl_statements(concepts: frozenset[str], rng: np.random.Generator) -> dict[str, float]:
    """The ``scp_codes`` dict of a record: diagnostic statements with likelihoods, then form (0.0),
    then rhythm (0.0), as PTB-XL orders them.
    """
    shares = _coding_shares()
    diagnostic: dict[str, float] = {}
    form: dict[str, float] = {}
    for c in sorted(concepts, key=lambda c: (DIAGNOSES[c].stage, c) if c in DIAGNOSES else (9, c)):
        d = DIAGNOSES.get(c)
        if d is None or d.kind != "diagnostic":
            continue
        if c == "NORM":
            diagnostic[c] = _likelihood(rng, _NORM_LIKELIHOOD)
        elif c == "LVH":
            if rng.random() < shares["LVH_statement"]:
                diagnostic[c] = _likelihood(rng, _UNCERTAIN)
                if rng.random() < 0.25:
                    form["VCLVH"] = 0.0
            else:
                form["VCLVH"] = 0.0
        elif c == "NDT":
            _encode_t_abnormality(concepts, rng, shares["NDT_statement"], diagnostic, form)
        elif c == "NST_":
            diagnostic[c] = 0.0 if rng.random() < 0.27 else _likelihood(rng, _LIKELY)
        else:
            diagnostic[c] = _likelihood(rng, _UNCERTAIN if c in _UNCERTAIN_CONCEPTS else _LIKELY)
    has_mi = any(m in concepts for m in MI_CONCEPTS)
    if "ABQRS" in concepts:
        form["ABQRS"] = 0.0
    if has_mi and rng.random() < 0.1:
        form["QWAVE"] = 0.0
    if any(c in concepts for c in (*ISCHEMIA, "NST_", "LVH_STRAIN")) and rng.random() < 0.35:
        form["STD_"] = 0.0
    if ("MI_TINV" in concepts or any(c in concepts for c in ISCHEMIA)) and rng.random() < 0.15:
        form["INVT"] = 0.0
    if "LVOLT" in concepts:
        form["LVOLT"] = 0.0
    rhythm = {r: (100.0 if r == "AFIB" and rng.random() < 0.03 else 0.0) for r in RHYTHMS if r in concepts}
    return {**diagnostic, **form, **rhythm}


def _encode_t_abnormality(concepts: frozenset[str], rng: np.random.Generator, share: float,
                          diagnostic: dict[str, float], form: dict[str, float]) -> None:
    """NDT itself for ``share`` of T abnormalities; otherwise (and sometimes besides) the form
    statement that describes the drawn T: LOWT (flat), INVT or TAB_ (inverted), NT_ (non-specific).
    Without NDT only LOWT, NT_ or TAB_ are used, the statements the Challenge folds into T-wave abnormal.
    """
    with_ndt = rng.random() < share
    if with_ndt:
        diagnostic["NDT"] = _likelihood(rng, _LIKELY)
    if with_ndt and rng.random() >= 0.35:
        return
    if "T_FLAT" in concepts:
        form["LOWT"] = 0.0
    elif "T_INV" in concepts:
        form["INVT" if with_ndt else "TAB_"] = 0.0
    else:
        form["NT_"] = 0.0


# --- Georgia encoding -----------------------------------------------------------------------------------

#: Concepts outside the shared classes, as Georgia codes them.
_GEORGIA_EXTRA = {
    "STACH": "427084000", "SBRAD": "426177001", "SARRH": "427393009", "AFIB": "164889003",
    "NST_": "428750005", "ISC_": "164930006", "LVOLT": "251146004",
}
_SINUS_RHYTHM = SINUS_RHYTHM
_Q_WAVE, _MI, _T_INVERSION = "164917005", "164865005", "59931005"
_LEFT_AXIS, _RIGHT_AXIS = "39732003", "47665007"


@cache
def _georgia_class_codes() -> dict[str, tuple[tuple[str, float], ...]]:
    """Class -> ((code, share), ...): one code, or two with the seed map's count deciding the split."""
    challenge, seed = load_label_map("challenge"), load_label_map("seed")
    out: dict[str, tuple[tuple[str, float], ...]] = {}
    for c in challenge.classes:
        codes, seed_codes = challenge.snomed_codes[c], seed.snomed_codes[c]
        if len(codes) == 1 or len(seed_codes) != 1 or seed_codes[0] not in codes:
            out[c] = ((codes[0], 1.0),)
            continue
        total = challenge.georgia_counts[c]
        share = seed.georgia_counts[c] / total if total else 1.0
        other = next(code for code in codes if code != seed_codes[0])
        out[c] = ((seed_codes[0], share), (other, 1.0 - share))
    return out


def nsr_share(priors: Priors) -> float:
    """Share of sinus-rhythm records with other codes that Georgia also codes 426783006 (records with
    no other code always get it), so that its count roughly matches Georgia's.
    """
    sinus = float(priors.rhythm_probabilities[0])
    return min(1.0, _GEORGIA_NSR_COUNT / GEORGIA_RECORDS / sinus) if sinus > 0 else 0.0


def georgia_codes(concepts: frozenset[str], axis_degrees: float, rng: np.random.Generator,
                  nsr: float) -> list[str]:
    """The ``Dx`` codes of a record: diagnoses, axis deviation (< -30 or > +90 degrees), rhythm last."""
    class_codes = _georgia_class_codes()
    codes: list[str] = []
    for c in sorted(concepts, key=lambda c: (DIAGNOSES[c].stage, c) if c in DIAGNOSES else (9, c)):
        if c in class_codes:
            options = class_codes[c]
            pick = int(rng.choice(len(options), p=[s for _, s in options])) if len(options) > 1 else 0
            codes.append(options[pick][0])
        elif c in _GEORGIA_EXTRA and c not in RHYTHMS:
            codes.append(_GEORGIA_EXTRA[c])
    if any(m in concepts for m in MI_CONCEPTS):
        codes.append(_MI if rng.random() < 0.05 else _Q_WAVE)
    t_inverted = "T_INV" in concepts or "MI_TINV" in concepts or any(c in concepts for c in ISCHEMIA)
    if t_inverted and rng.random() < 0.3:
        codes.append(_T_INVERSION)
    if axis_degrees < -30.0:
        codes.append(_LEFT_AXIS)
    elif axis_degrees > 90.0:
        codes.append(_RIGHT_AXIS)
    rhythm = next((r for r in RHYTHMS if r in concepts), "SR")
    if rhythm != "SR":
        codes.append(_GEORGIA_EXTRA[rhythm])
    elif not codes or rng.random() < nsr:  # a record never goes without a Dx code
        codes.append(_SINUS_RHYTHM)
    return list(dict.fromkeys(codes))


def all_georgia_codes() -> set[str]:
    """Every SNOMED CT code :func:`georgia_codes` can write (for checks against the vocabulary)."""
    codes = {code for options in _georgia_class_codes().values() for code, _ in options}
    return codes | set(_GEORGIA_EXTRA.values()) | {
        _SINUS_RHYTHM, _Q_WAVE, _MI, _T_INVERSION, _LEFT_AXIS, _RIGHT_AXIS}
