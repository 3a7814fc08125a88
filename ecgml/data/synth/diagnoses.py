"""Each diagnosis as a documented rule that changes the heart model, so labels mean something.

A rule's docstring is the rule: it states the criterion the generated waveform meets (PR > 200 ms for
1AVB, QRS >= 120 ms for complete bundle-branch blocks, a frontal axis of -45..-90 degrees for LAFB,
...). Rules act on the dipole model (:mod:`ecgml.data.synth.model`): a region of leads is a dipole
direction (:func:`~ecgml.data.synth.model.region_vector`), so "ST depression in V1-V4" is an injury
current pointing away from those leads and shows reciprocally elsewhere, as in a real heart.

Rules run in ``stage`` order: rhythm, QRS morphology (bundle branches), axis and AV conduction,
voltage, infarction Q waves, ST-T, then :func:`finalize` keeps the record consistent with what it is
*not* labelled with (no LVH voltage without LVH, no long QT without LNGQT, ...).

Concept names are PTB-XL SCP statements where one exists; ``T_FLAT``, ``T_INV``, ``T_NONSPEC``
(how a T-wave abnormality looks), ``LVH_STRAIN`` and ``MI_TINV`` are modifiers chosen with the label,
so the written form statements (LOWT, INVT, NT_ ...) describe the drawn waveform.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

import numpy as np

from ecgml.data.synth.model import (
    EDGE,
    HeartParams,
    WaveSet,
    frontal_axis,
    lead_vectors,
    limb_precordial_peak_to_peak,
    region_vector,
    render_template,
    set_frontal_axis,
    sokolow_lyon,
)

Rule = Callable[[HeartParams, np.random.Generator, Collection[str]], None]

INFERIOR = ("II", "III", "aVF")
LATERAL = ("I", "aVL", "V5", "V6")
ANTERIOR = ("V1", "V2", "V3", "V4")
#: Concepts that widen the QRS on purpose; everything else keeps it at or under 110 ms.
WIDE_QRS = frozenset({"CLBBB", "CRBBB", "IVCD"})
#: Modifiers: not statements by themselves, they say how a labelled abnormality is drawn.
MODIFIERS = frozenset({"T_FLAT", "T_INV", "T_NONSPEC", "LVH_STRAIN", "MI_TINV"})


@dataclass(frozen=True)
class Diagnosis:
    """A concept: its kind (rhythm / diagnostic / form), when its rule runs, what it excludes."""

    name: str
    kind: str
    stage: int
    rule: Rule
    excludes: frozenset[str]

    @property
    def description(self) -> str:
        """The rule, as written in its docstring."""
        return inspect.getdoc(self.rule) or ""


DIAGNOSES: dict[str, Diagnosis] = {}


def _diagnosis(name: str, kind: str, stage: int, excludes: Iterable[str] = ()) -> Callable[[Rule], Rule]:
    def register(rule: Rule) -> Rule:
        DIAGNOSES[name] = Diagnosis(name, kind, stage, rule, frozenset(excludes))
        return rule
    return register


def incompatible(a: str, b: str) -> bool:
    """Whether two concepts cannot be labelled on one record (symmetric)."""
    da, db = DIAGNOSES.get(a), DIAGNOSES.get(b)
    return bool((da and b in da.excludes) or (db and a in db.excludes))


# --- helpers ------------------------------------------------------------------------------------

def _oriented(params: HeartParams, vector: tuple[float, float, float]) -> np.ndarray:
    """A template QRS force in this patient's heart orientation and voltage."""
    return params.orientation @ np.asarray(vector) * params.qrs_gain


def _mean_gain(params: HeartParams, leads: tuple[str, ...], direction: np.ndarray) -> float:
    vectors = lead_vectors(params.lead_field)
    return float(np.mean([vectors[name] @ direction for name in leads]))


def _mean_level(params: HeartParams, amp: np.ndarray, leads: tuple[str, ...]) -> float:
    vectors = lead_vectors(params.lead_field)
    return float(np.mean([vectors[name] @ amp for name in leads]))


def _set_t_level(params: HeartParams, leads: tuple[str, ...], target: float) -> None:
    """Move the T wave along the leads' region direction so its mean peak there is ``target`` mV."""
    u = region_vector(leads, params.lead_field)
    gain = _mean_gain(params, leads, u)
    main = params.t.index("T_main")
    current = _mean_level(params, params.t.amp[main], leads)
    delta = (target - current) / gain
    params.t.amp[main] += delta * u
    params.t.amp[params.t.index("T_up")] += 0.45 * delta * u


def _add_st(params: HeartParams, leads: tuple[str, ...], level: float, name: str) -> None:
    """An injury current: an ST-segment wave whose mean level in ``leads`` is ``level`` mV."""
    u = region_vector(leads, params.lead_field)
    params.t.add(name, 0.42, 0.13, u * level / _mean_gain(params, leads, u))


def _scale_t(params: HeartParams, factor: float) -> None:
    for name in ("T_up", "T_main"):
        params.t.amp[params.t.index(name)] *= factor


def _main_wave(params: HeartParams) -> str:
    """The QRS wave that carries the main ventricular force (normal or LBBB template)."""
    return "R_main" if params.qrs.has("R_main") else "L_lv1"


def _qrs_direction(params: HeartParams) -> np.ndarray:
    area = params.qrs.area()
    return area / np.linalg.norm(area)


def _discordant_t(params: HeartParams, size: float, st: float) -> None:
    """Secondary repolarisation: T (and ST) opposite to the net QRS force, as after a slow QRS."""
    u = _qrs_direction(params)
    params.t.amp[params.t.index("T_main")] = -size * u
    params.t.amp[params.t.index("T_up")] = -0.45 * size * u
    params.t.add("ST_secondary", 0.42, 0.13, -st * u)


# --- rhythms (stage 0) -----------------------------------------------------------------------------

@_diagnosis("SR", "rhythm", 0)
def sinus_rhythm(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Normal sinus rhythm: a P wave before every QRS at 60-100 bpm (sampled 62-97 bpm), RSA < 4 %."""


@_diagnosis("STACH", "rhythm", 0)
def sinus_tachycardia(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Sinus tachycardia: sinus P waves at 105-150 bpm (> 100); PR shortens by 5-20 ms, RSA fades."""
    params.heart_rate = float(rng.uniform(105.0, 150.0))
    params.pr = max(params.pr - float(rng.uniform(0.005, 0.02)), params.p_duration + 0.025, 0.12)
    params.rsa *= 0.3


@_diagnosis("SBRAD", "rhythm", 0)
def sinus_bradycardia(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Sinus bradycardia: sinus P waves at 40-56 bpm (< 60)."""
    params.heart_rate = float(rng.uniform(40.0, 56.0))


@_diagnosis("SARRH", "rhythm", 0)
def sinus_arrhythmia(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Sinus arrhythmia: respiratory P-P modulation of 9-16 % (longest - shortest RR > 120 ms), 55-90 bpm."""
    params.heart_rate = float(rng.uniform(55.0, 90.0))
    params.rsa = float(rng.uniform(0.09, 0.16))
    params.resp_hz = float(rng.uniform(0.15, 0.25))


@_diagnosis("AFIB", "rhythm", 0, excludes=("NORM", "1AVB", "2AVB", "LAO/LAE"))
def atrial_fibrillation(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Atrial fibrillation: no P waves; irregularly irregular RR (independent gamma RRs, CV 0.15-0.30)
    at 60-150 bpm; fibrillatory baseline of 4-9 Hz f-waves, 0.04-0.15 mV, largest in V1 and II/III/aVF.
    """
    params.rhythm = "afib"
    params.p.amp[:] = 0.0
    params.heart_rate = float(np.clip(rng.normal(95.0, 20.0), 60.0, 150.0))
    params.rr_cv = float(rng.uniform(0.15, 0.30))
    params.f_wave_amp = float(rng.uniform(0.04, 0.15))
    params.f_wave_hz = float(rng.uniform(5.0, 8.0))


# --- QRS morphology (stage 1) ------------------------------------------------------------------------

_BUNDLE = ("CLBBB", "ILBBB", "CRBBB", "IRBBB", "IVCD")


def _lbbb(params: HeartParams, rng: np.random.Generator, duration: float, discordance: float) -> None:
    params.qrs = WaveSet.of(
        ("L_init", 0.018, 0.007, tuple(_oriented(params, (0.22, 0.04, -0.10)))),
        ("L_lv1", 0.050, 0.016, tuple(_oriented(params, (0.80, 0.12, 0.85)))),
        ("L_lv2", 0.098, 0.018, tuple(_oriented(params, (0.75, 0.02, 0.90)))),
    )
    params.qrs.amp *= rng.uniform(0.85, 1.2)
    params.qrs.retime(0.0, duration)
    set_frontal_axis(params, float(rng.uniform(-20.0, 50.0)), wave="L_lv1")
    _discordant_t(params, discordance * float(rng.uniform(0.3, 0.5)), discordance * float(rng.uniform(0.08, 0.15)))


@_diagnosis("CLBBB", "diagnostic", 1, excludes=("CRBBB", "IRBBB", "ILBBB", "IVCD", "LAFB", "LPFB", "NORM"))
def complete_lbbb(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Complete LBBB: QRS 128-170 ms (>= 120); the septum fires right-to-left, so no q in I/aVL/V5/V6;
    slow leftward-posterior LV activation in two humps: broad notched R in I, aVL, V5, V6, deep broad S
    (QS) in V1-V2; secondary ST-T discordant to the QRS (ST up and T upright in V1-V3, down in V5-V6).
    """
    _lbbb(params, rng, float(rng.uniform(0.128, 0.17)), 1.0)


@_diagnosis("ILBBB", "diagnostic", 1, excludes=("CRBBB", "IRBBB", "IVCD", "NORM"))
def incomplete_lbbb(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Incomplete LBBB: the LBBB morphology (no septal q in I/V5/V6, slurred R, QS-type V1) with QRS
    100-112 ms, and milder discordant ST-T.
    """
    _lbbb(params, rng, float(rng.uniform(0.100, 0.112)), 0.5)


def _rbbb(params: HeartParams, rng: np.random.Generator, duration: float, width: float, size: float) -> None:
    params.qrs.amp[params.qrs.index("S_term")] *= 0.5
    center = duration - EDGE * width
    center = max(center, float(params.qrs.center[params.qrs.index("S_term")]) + 0.012)
    params.qrs.add("R_rv", center, width, _oriented(params, (-0.35, -0.05, -0.9)) * size)
    params.qrs.retime(0.0, duration)
    # the terminal force turns the net-area axis right; real RBBB keeps it mostly normal: cap at +25 deg
    if frontal_axis(params) > params.axis_target + 25.0:
        set_frontal_axis(params, params.axis_target + 25.0)


@_diagnosis("CRBBB", "diagnostic", 1, excludes=("IRBBB", "ILBBB", "IVCD", "NORM"))
def complete_rbbb(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Complete RBBB: normal initial forces, then a slow terminal right-anterior force: QRS 132-165 ms
    (>= 120), rsR' in V1-V2, wide slurred S in I, aVL, V5-V6; T inverted in V1-V3 (secondary).
    """
    _rbbb(params, rng, float(rng.uniform(0.132, 0.165)), float(rng.uniform(0.014, 0.02)),
          float(rng.uniform(1.0, 1.4)))
    _set_t_level(params, ("V1", "V2", "V3"), -float(rng.uniform(0.08, 0.25)))


@_diagnosis("IRBBB", "diagnostic", 1, excludes=("ILBBB", "IVCD", "NORM"))
def incomplete_rbbb(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Incomplete RBBB: the RBBB pattern (rSr' in V1-V2, terminal S in I/V6) with QRS 100-112 ms."""
    _rbbb(params, rng, float(rng.uniform(0.100, 0.112)), float(rng.uniform(0.009, 0.012)),
          float(rng.uniform(0.6, 0.9)))


@_diagnosis("IVCD", "diagnostic", 1, excludes=("NORM",))
def nonspecific_ivcd(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Non-specific intraventricular conduction delay: QRS 118-140 ms (> 110) with the normal sequence
    kept (septal q, no R'), i.e. uniformly slow conduction without a bundle-branch pattern.
    """
    params.qrs.retime(0.0, float(rng.uniform(0.118, 0.14)))


# --- axis, AV conduction, atria, RV and septum (stage 2) ---------------------------------------------

@_diagnosis("LAFB", "diagnostic", 2, excludes=("LPFB", "RVH", "ILBBB", "NORM"))
def left_anterior_fascicular_block(params: HeartParams, rng: np.random.Generator,
                                   concepts: Collection[str]) -> None:
    """LAFB: initial force inferior-rightward (q in I/aVL, r in II/III/aVF), then the main force turns
    superior-left: frontal axis -50..-80 degrees (criterion -45..-90), qR in aVL, rS in II/III/aVF;
    QRS < 120 ms.
    """
    if params.qrs.has("Q_septal"):
        params.qrs.amp[params.qrs.index("Q_septal")] = _oriented(params, (-0.10, 0.20, -0.10))
    set_frontal_axis(params, float(rng.uniform(-80.0, -50.0)), wave=_main_wave(params))
    if params.qrs_duration < 0.105:
        params.qrs.retime(0.0, params.qrs_duration + float(rng.uniform(0.003, 0.01)))


@_diagnosis("LPFB", "diagnostic", 2, excludes=("ILBBB", "NORM"))
def left_posterior_fascicular_block(params: HeartParams, rng: np.random.Generator,
                                    concepts: Collection[str]) -> None:
    """LPFB: initial force superior-leftward (r in I/aVL, q in II/III/aVF), main force inferior-right:
    frontal axis +100..+150 degrees (criterion +90..+180), qR in III/aVF, rS in I; QRS < 120 ms.
    """
    if params.qrs.has("Q_septal"):
        params.qrs.amp[params.qrs.index("Q_septal")] = _oriented(params, (0.12, -0.18, -0.06))
    set_frontal_axis(params, float(rng.uniform(100.0, 150.0)), wave=_main_wave(params))


@_diagnosis("1AVB", "diagnostic", 2, excludes=("2AVB", "NORM"))
def first_degree_av_block(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """First-degree AV block: every P conducted with a PR of 215-320 ms (criterion > 200 ms)."""
    params.pr = max(float(rng.uniform(0.215, 0.32)), params.p_duration + 0.06)
    params.heart_rate = min(params.heart_rate, 90.0)


@_diagnosis("2AVB", "diagnostic", 2, excludes=("NORM",))
def second_degree_av_block(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Second-degree AV block: some P waves are not followed by a QRS (fewer QRS than P waves).
    Mobitz I (60 %): PR 170-220 ms lengthening by shrinking steps (first +60-110 ms) until a P is
    dropped, 3:2 to 5:4. Mobitz II (40 %): constant PR 140-200 ms, 2:1 to 4:3 conduction.
    """
    params.heart_rate = float(rng.uniform(65.0, 95.0))
    if rng.random() < 0.6:
        params.av_block, params.av_ratio = "mobitz1", int(rng.integers(3, 6))
        params.pr = max(float(rng.uniform(0.17, 0.22)), params.p_duration + 0.04)
        params.pr_increment = float(rng.uniform(0.06, 0.11))
    else:
        params.av_block, params.av_ratio = "mobitz2", int(rng.integers(2, 5))
        params.pr = max(float(rng.uniform(0.14, 0.20)), params.p_duration + 0.04)


@_diagnosis("LAO/LAE", "diagnostic", 2, excludes=("NORM",))
def left_atrial_enlargement(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Left atrial overload: the left-atrial force comes late, large and posterior: P 128-150 ms
    (> 120), notched (bifid) in II, deep terminal negative P in V1.
    """
    ra, la = params.p.index("P_ra"), params.p.index("P_la")
    params.p.center[la] = params.p.center[ra] + float(rng.uniform(0.045, 0.055))
    params.p.width[la] *= 1.35
    params.p.amp[la] = params.p.amp[la] * 1.5 + params.orientation @ np.array(
        [0.0, 0.0, float(rng.uniform(0.06, 0.10))])
    params.p.retime(0.0, float(rng.uniform(0.128, 0.15)))
    params.pr = min(max(params.pr, params.p_duration + float(rng.uniform(0.03, 0.05))), 0.198)


@_diagnosis("RVH", "diagnostic", 2, excludes=("NORM", "LAFB", "CLBBB", "ILBBB"))
def right_ventricular_hypertrophy(params: HeartParams, rng: np.random.Generator,
                                  concepts: Collection[str]) -> None:
    """RVH: a strong right-anterior RV force: tall R in V1 (R/S > 1), frontal axis +100..+150 (right
    axis deviation); with strain (half of cases) T inverted in V1-V3.
    """
    k = params.qrs.index("R_main")
    params.qrs.amp[k] *= 0.55
    force = _oriented(params, (-0.45, 0.25, -0.85)) * float(rng.uniform(0.9, 1.3))
    params.qrs.add("RVH_force", params.qrs.center[k] + 0.004, params.qrs.width[k] * 1.1, force)
    set_frontal_axis(params, float(rng.uniform(100.0, 150.0)))
    v1 = 6
    for _ in range(4):
        beat = render_template(params.qrs, params.lead_field)[v1]
        if beat.max() > 1.3 * -beat.min() and beat.max() > 0.5:
            break
        params.qrs.amp[params.qrs.index("RVH_force")] *= 1.3
        set_frontal_axis(params, float(rng.uniform(100.0, 150.0)))
    if rng.random() < 0.5:
        _set_t_level(params, ("V1", "V2", "V3"), -float(rng.uniform(0.1, 0.25)))


@_diagnosis("SEHYP", "diagnostic", 2, excludes=("NORM", "CLBBB", "ILBBB"))
def septal_hypertrophy(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Septal hypertrophy: the septal (rightward-anterior) force is 2.5-3.5 times normal: deep narrow
    Q (< 40 ms) in I, aVL, V5, V6 and tall R in V1-V2.
    """
    if params.qrs.has("Q_septal"):
        params.qrs.amp[params.qrs.index("Q_septal")] *= float(rng.uniform(2.5, 3.5))


# --- voltage (stage 3) -----------------------------------------------------------------------------

@_diagnosis("LVH", "diagnostic", 3, excludes=("NORM", "LVOLT"))
def left_ventricular_hypertrophy(params: HeartParams, rng: np.random.Generator,
                                 concepts: Collection[str]) -> None:
    """LVH: QRS voltage scaled until Sokolow-Lyon S(V1) + max R(V5, V6) = 3.8-5.2 mV (criterion
    > 3.5 mV), QRS +5-12 ms; with strain (modifier LVH_STRAIN) ST depression 0.05-0.12 mV and
    inverted T in I, aVL, V5, V6.
    """
    params.qrs.amp *= float(rng.uniform(3.8, 5.2)) / sokolow_lyon(params)
    if params.qrs_duration < 0.105:
        params.qrs.retime(0.0, params.qrs_duration + float(rng.uniform(0.005, 0.012)))
    if "LVH_STRAIN" in concepts:
        _add_st(params, LATERAL, -float(rng.uniform(0.05, 0.12)), "ST_strain")
        _set_t_level(params, LATERAL, -float(rng.uniform(0.1, 0.3)))


# --- infarction Q waves and QRS form (stage 4) --------------------------------------------------------

def _infarct(params: HeartParams, rng: np.random.Generator, concepts: Collection[str],
             leads: tuple[str, ...], name: str, septal: bool) -> None:
    """Necrosis removes the forces toward the infarct; the unopposed rest points away: Q waves."""
    u = region_vector(leads, params.lead_field)
    width = float(rng.uniform(0.010, 0.013))                     # visible Q 40-60 ms
    depth = float(rng.uniform(0.2, 0.5))
    params.qrs.add(f"Q_{name}", EDGE * width, width, -u * depth / _mean_gain(params, leads, u))
    for wave, keep in (("R_main", float(rng.uniform(0.3, 0.6))), ("L_lv1", 0.6)):
        if params.qrs.has(wave):
            k = params.qrs.index(wave)
            along = params.qrs.amp[k] @ u
            if along > 0:
                params.qrs.amp[k] -= (1.0 - keep) * along * u
    if septal and params.qrs.has("Q_septal"):
        k = params.qrs.index("Q_septal")
        along = params.qrs.amp[k] @ u
        if along > 0:
            params.qrs.amp[k] -= along * u
    if "MI_TINV" in concepts:
        _set_t_level(params, leads, -float(rng.uniform(0.1, 0.3)))


@_diagnosis("IMI", "diagnostic", 4, excludes=("NORM", "ILMI"))
def inferior_mi(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Inferior MI: pathological Q (>= 40 ms, 0.2-0.5 mV) in II, III, aVF; T inverted there if MI_TINV."""
    _infarct(params, rng, concepts, INFERIOR, "inf", septal=False)


@_diagnosis("ILMI", "diagnostic", 4, excludes=("NORM", "IMI"))
def inferolateral_mi(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Inferolateral MI: pathological Q in II, III, aVF, V5, V6."""
    _infarct(params, rng, concepts, (*INFERIOR, "V5", "V6"), "infl", septal=False)


@_diagnosis("ASMI", "diagnostic", 4, excludes=("NORM", "AMI", "ALMI"))
def anteroseptal_mi(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Anteroseptal MI: septal r lost and Q/QS complexes in V1-V3 (V4)."""
    _infarct(params, rng, concepts, ("V1", "V2", "V3"), "as", septal=True)


@_diagnosis("AMI", "diagnostic", 4, excludes=("NORM", "ASMI", "ALMI"))
def anterior_mi(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Anterior MI: Q/QS complexes in V1-V4, loss of R progression."""
    _infarct(params, rng, concepts, ANTERIOR, "ant", septal=True)


@_diagnosis("ALMI", "diagnostic", 4, excludes=("NORM", "ASMI", "AMI"))
def anterolateral_mi(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Anterolateral MI: pathological Q in I, aVL, V4-V6."""
    _infarct(params, rng, concepts, ("I", "aVL", "V4", "V5", "V6"), "al", septal=False)


@_diagnosis("ABQRS", "form", 4)
def abnormal_qrs(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Abnormal QRS: a fragmented QRS, i.e. an extra notch inside it (a 0.25-0.45 mV force, about 20 ms)."""
    direction = rng.normal(size=3)
    onset, duration = params.qrs.onset, params.qrs_duration
    params.qrs.add("notch", onset + duration * float(rng.uniform(0.35, 0.7)), float(rng.uniform(0.0035, 0.005)),
                   direction / np.linalg.norm(direction) * float(rng.uniform(0.25, 0.45)) * params.qrs_gain)


# --- ST-T (stage 5) --------------------------------------------------------------------------------

def _ischemia(params: HeartParams, rng: np.random.Generator, leads: tuple[str, ...], name: str,
              depth: tuple[float, float], t_level: tuple[float, float]) -> None:
    _add_st(params, leads, -float(rng.uniform(*depth)), f"ST_{name}")
    _set_t_level(params, leads, -float(rng.uniform(*t_level)))


@_diagnosis("ISCAN", "diagnostic", 5, excludes=("NORM",))
def ischemia_anterior(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Anterior ischaemia: ST depression 0.08-0.2 mV and T inversion (-0.1..-0.3 mV) in V1-V4."""
    _ischemia(params, rng, ANTERIOR, "an", (0.08, 0.2), (0.1, 0.3))


@_diagnosis("ISCIN", "diagnostic", 5, excludes=("NORM",))
def ischemia_inferior(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Inferior ischaemia: ST depression 0.08-0.2 mV and T inversion in II, III, aVF."""
    _ischemia(params, rng, INFERIOR, "in", (0.08, 0.2), (0.1, 0.3))


@_diagnosis("ISCLA", "diagnostic", 5, excludes=("NORM",))
def ischemia_lateral(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Lateral ischaemia: ST depression 0.08-0.2 mV and T inversion in I, aVL, V5, V6."""
    _ischemia(params, rng, LATERAL, "la", (0.08, 0.2), (0.1, 0.3))


@_diagnosis("ISC_", "diagnostic", 5, excludes=("NORM",))
def ischemia_nonspecific(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Non-specific ischaemic ST-T: milder ST depression (0.05-0.15 mV) and T inversion over an
    anterolateral (I, aVL, V4-V6) or inferolateral (II, III, aVF, V4-V6) territory.
    """
    regions = (("I", "aVL", "V4", "V5", "V6"), ("II", "III", "aVF", "V4", "V5", "V6"))
    _ischemia(params, rng, regions[int(rng.integers(2))], "isc", (0.05, 0.15), (0.05, 0.2))


@_diagnosis("NST_", "diagnostic", 5, excludes=("NORM",))
def nonspecific_st(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Non-specific ST-T change: slight ST depression (0.03-0.07 mV) where the QRS is dominant and a T
    flattened to 30-60 % of its size.
    """
    u = _qrs_direction(params)
    params.t.add("ST_nst", 0.42, 0.13, -u * float(rng.uniform(0.03, 0.07)) / 0.8)
    _scale_t(params, float(rng.uniform(0.3, 0.6)))


@_diagnosis("NDT", "diagnostic", 5, excludes=("NORM",))
def nondiagnostic_t(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Non-diagnostic T abnormality, no ST shift: T_FLAT: T at 0-20 % of its size (low/flat T);
    T_INV: T inverted (-0.1..-0.3 mV) in a lateral, inferior or anterior group of leads; T_NONSPEC: T
    at 30-60 % and turned 40-80 degrees away from the QRS.
    """
    if "T_FLAT" in concepts:
        _scale_t(params, float(rng.uniform(0.0, 0.2)))
    elif "T_INV" in concepts:
        regions = (LATERAL, INFERIOR, ANTERIOR)
        _set_t_level(params, regions[int(rng.integers(3))], -float(rng.uniform(0.1, 0.3)))
    else:
        _scale_t(params, float(rng.uniform(0.3, 0.6)))
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = np.radians(rng.uniform(40.0, 80.0))
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        turn = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
        for name in ("T_up", "T_main"):
            params.t.amp[params.t.index(name)] = turn @ params.t.amp[params.t.index(name)]


@_diagnosis("LNGQT", "diagnostic", 5)
def long_qt(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Long QT: Bazett QTc 480-560 ms (criterion > 470 ms)."""
    params.qtc = float(rng.uniform(0.48, 0.56))


@_diagnosis("LVOLT", "form", 6, excludes=("LVH",))
def low_voltage(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Low QRS voltage: every limb lead's QRS < 0.5 mV peak to peak (drawn at 0.3-0.45) and every
    precordial lead's < 1.0 mV; T waves shrink by 30 %.
    """
    limb, precordial = limb_precordial_peak_to_peak(params)
    params.qrs.amp *= min(float(rng.uniform(0.3, 0.45)) / limb, 0.9 / precordial)
    _scale_t(params, 0.7)


# --- ectopic beats and ST shifts (CPSC 2018's classes) -----------------------------------------------

@_diagnosis("PAC", "form", 0, excludes=("AFIB", "NORM", "PVC"))
def premature_atrial_beats(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Premature atrial contractions: after one in 2-5 sinus cycles a conducted beat comes early, at 55-70 % of
    the RR (P, normal QRS); the sinus node resets, so the next beat follows it by one RR (no compensatory
    pause)."""
    params.ectopy = "atrial"
    params.ectopic_every = int(rng.integers(2, 6))
    params.ectopic_coupling = float(rng.uniform(0.55, 0.70))


@_diagnosis("PVC", "form", 9, excludes=("NORM", "PAC"))
def premature_ventricular_beats(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Premature ventricular contractions: one in 2-5 beats is replaced by an early (50-70 % of the RR) beat
    with no P wave, a wide QRS (130-170 ms) of left-bundle-branch shape and a discordant T; the sinus P it
    interrupts is not conducted, so the pause after it is compensatory. (Stage 9: drawn from the finished
    heart, so the ectopic beat shares the patient's orientation and voltage.)"""
    ectopic = params.copy()
    _lbbb(ectopic, rng, float(rng.uniform(0.13, 0.17)), 1.0)
    ectopic.qt_extra = 0.7 * max(0.0, ectopic.qrs_duration - 0.10)
    params.ectopy = "ventricular"
    params.ectopic_every = int(rng.integers(2, 6))
    params.ectopic_coupling = float(rng.uniform(0.50, 0.70))
    params.ectopic = ectopic


#: The lead groups an ST shift is drawn in; the one drawn is noted as ``notes["st_territory"]`` (its index).
ST_TERRITORIES: tuple[tuple[str, ...], ...] = (ANTERIOR, INFERIOR, LATERAL)


def _territory(params: HeartParams, rng: np.random.Generator) -> tuple[str, ...]:
    index = int(rng.integers(len(ST_TERRITORIES)))
    params.notes["st_territory"] = float(index)
    return ST_TERRITORIES[index]


@_diagnosis("STD_", "form", 5, excludes=("NORM", "STE_"))
def st_depression(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """ST depression: a horizontal ST shift of -0.10..-0.25 mV in an anterior, inferior or lateral group of
    leads, T left as it is."""
    _add_st(params, _territory(params, rng), -float(rng.uniform(0.10, 0.25)), "ST_depression")


@_diagnosis("STE_", "form", 5, excludes=("NORM", "STD_"))
def st_elevation(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """ST elevation: an injury current raising ST by 0.15-0.35 mV in an anterior, inferior or lateral group of
    leads (depressed reciprocally in the opposite leads), T raised by 0.1-0.2 mV there."""
    leads = _territory(params, rng)
    _add_st(params, leads, float(rng.uniform(0.15, 0.35)), "ST_elevation")
    vectors = lead_vectors(params.lead_field)
    current = float(np.mean([vectors[name] @ params.t.amp[params.t.index("T_main")] for name in leads]))
    _set_t_level(params, leads, current + float(rng.uniform(0.1, 0.2)))


# --- NORM: no rule; finalize keeps the record consistent ---------------------------------------------

@_diagnosis("NORM", "diagnostic", 0)
def normal_ecg(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Normal ECG: the patient's healthy heart unchanged: axis -25..+88 degrees, PR 125-192 ms, QRS
    78-99 ms, QTc 375-440 ms, Sokolow-Lyon <= 3.1 mV.
    """


def finalize(params: HeartParams, rng: np.random.Generator, concepts: Collection[str]) -> None:
    """Keep the record free of findings it is not labelled with: without LVH, Sokolow-Lyon <= 3.1 mV;
    without LVOLT, some limb lead >= 0.6 mV; a wide QRS lengthens QT by 70 % of the excess over 100 ms.
    """
    if "LVH" not in concepts:
        sl = sokolow_lyon(params)
        if sl > 3.1:
            params.qrs.amp *= 3.1 / sl
    if "LVOLT" not in concepts:
        limb, _ = limb_precordial_peak_to_peak(params)
        if limb < 0.6:
            params.qrs.amp *= min(0.6 / limb, 3.1 / max(sokolow_lyon(params), 1e-6))
    params.qt_extra = 0.7 * max(0.0, params.qrs_duration - 0.10)


def apply_diagnoses(params: HeartParams, concepts: Collection[str], rng: np.random.Generator) -> HeartParams:
    """Apply every concept's rule in stage order, then :func:`finalize`; returns ``params``."""
    unknown = [c for c in concepts if c not in DIAGNOSES and c not in MODIFIERS]
    if unknown:
        raise ValueError(f"unknown concept(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(DIAGNOSES))}")
    for diagnosis in sorted((DIAGNOSES[c] for c in concepts if c in DIAGNOSES), key=lambda d: (d.stage, d.name)):
        diagnosis.rule(params, rng, concepts)
    finalize(params, rng, concepts)
    return params
