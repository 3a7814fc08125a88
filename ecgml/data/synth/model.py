"""A vectorcardiographic (dipole) model of the P-QRS-T cycle, projected to the 12 leads.

Why this model: ECGSYN (McSharry et al. 2003) writes each beat as a sum of Gaussian waves; Sameni et
al. (2007) give each wave a 3-D amplitude, a dipole, so that every lead is a projection of one heart
vector and the 12 leads stay mutually consistent. Diagnoses then become statements about the dipole
(an axis, a delayed terminal force, a missing septal force) rather than per-lead paint. The dipole is
projected to the 8 independent leads (I, II, V1-V6) with the Dower lead field, the pseudo-inverse of
the published inverse Dower matrix (Edenbrandt & Pahlm 1988); III, aVR, aVL and aVF follow from
Einthoven and Goldberger, as a recorder derives them.

Frame (Frank): X to the patient's left, Y to the feet, Z to the back. Units: seconds and millivolts.
Rendering is vectorised: every wave of every beat becomes one column of a sparse matrix whose rows are
samples, so a 10 s record at 500 Hz costs one sparse product (a few hundred microseconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
from scipy import sparse

from ecgml.data.leads import STANDARD_LEADS

#: The 8 independent leads the dipole is projected to, in :func:`dower_lead_field` row order.
INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")

#: Inverse Dower matrix (Edenbrandt & Pahlm 1988): rows X, Y, Z; columns V1-V6, I, II.
_INVERSE_DOWER = np.array([
    [-0.172, -0.074, 0.122, 0.231, 0.239, 0.194, 0.156, -0.010],
    [0.057, -0.019, -0.106, -0.022, 0.041, 0.048, -0.227, 0.887],
    [-0.229, -0.310, -0.246, -0.063, 0.055, 0.108, 0.022, 0.102],
])

#: A Gaussian wave counts from -EDGE to +EDGE standard deviations around its centre (4.4 % of peak):
#: onsets and offsets of the model (PR, QRS, QT) are defined with it.
EDGE = 2.5
#: Waves are evaluated over +-SUPPORT standard deviations; beyond, a Gaussian is below 0.03 %.
SUPPORT = 4.0


@cache
def dower_lead_field() -> np.ndarray:
    """``float64[8, 3]``: dipole (X, Y, Z) -> leads I, II, V1-V6 (pseudo-inverse of inverse Dower)."""
    forward = np.linalg.pinv(_INVERSE_DOWER)  # rows V1..V6, I, II
    field_ = np.vstack([forward[6:8], forward[:6]])
    field_.setflags(write=False)
    return field_


@cache
def _derivation() -> np.ndarray:
    """``float64[12, 8]``: the 8 independent leads -> the 12 standard leads in STANDARD_LEADS order."""
    m = np.zeros((12, 8))
    m[0, 0] = 1.0                              # I
    m[1, 1] = 1.0                              # II
    m[2, 0], m[2, 1] = -1.0, 1.0               # III = II - I
    m[3, 0], m[3, 1] = -0.5, -0.5              # aVR = -(I + II) / 2
    m[4, 0], m[4, 1] = 1.0, -0.5               # aVL = I - II / 2
    m[5, 0], m[5, 1] = -0.5, 1.0               # aVF = II - I / 2
    m[6:, 2:] = np.eye(6)                      # V1..V6
    m.setflags(write=False)
    return m


def twelve_from_eight(eight: np.ndarray) -> np.ndarray:
    """``[8, ...]`` independent leads -> ``[12, ...]`` standard leads (Einthoven and Goldberger)."""
    return np.tensordot(_derivation(), eight, axes=1)


def lead_vectors(field_8: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each standard lead's 3-D lead vector: the dipole direction the lead sees as positive."""
    field_8 = dower_lead_field() if field_8 is None else field_8
    twelve = _derivation() @ field_8
    return {name: twelve[i] for i, name in enumerate(STANDARD_LEADS)}


def region_vector(leads: tuple[str, ...], field_8: np.ndarray | None = None) -> np.ndarray:
    """Unit dipole direction that a group of leads sees as positive (normalised sum of lead vectors).

    An injury current or a lost force "in the inferior leads" is a dipole along this direction.
    """
    vectors = lead_vectors(field_8)
    total = np.sum([vectors[name] for name in leads], axis=0)
    return total / np.linalg.norm(total)


@dataclass
class WaveSet:
    """Gaussian waves of one part of the beat: centres and widths (s.d.) in seconds, dipoles in mV.

    For the T set (which also holds ST-segment waves) centres and widths are fractions of the beat's
    QT interval, so repolarisation stretches with the heart rate as QT does.
    """

    names: list[str] = field(default_factory=list)
    center: np.ndarray = field(default_factory=lambda: np.zeros(0))
    width: np.ndarray = field(default_factory=lambda: np.zeros(0))
    amp: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    @classmethod
    def of(cls, *waves: tuple[str, float, float, tuple[float, float, float]]) -> WaveSet:
        """Build from ``(name, centre, width, (x, y, z))`` tuples."""
        return cls(
            names=[w[0] for w in waves],
            center=np.array([w[1] for w in waves], dtype=float),
            width=np.array([w[2] for w in waves], dtype=float),
            amp=np.array([w[3] for w in waves], dtype=float).reshape(-1, 3),
        )

    def copy(self) -> WaveSet:
        return WaveSet(list(self.names), self.center.copy(), self.width.copy(), self.amp.copy())

    def index(self, name: str) -> int:
        return self.names.index(name)

    def has(self, name: str) -> bool:
        return name in self.names

    def add(self, name: str, center: float, width: float, amp: np.ndarray | tuple[float, ...]) -> None:
        self.names.append(name)
        self.center = np.append(self.center, center)
        self.width = np.append(self.width, width)
        self.amp = np.vstack([self.amp, np.asarray(amp, dtype=float).reshape(1, 3)])

    def remove(self, name: str) -> None:
        keep = [i for i, n in enumerate(self.names) if n != name]
        self.names = [self.names[i] for i in keep]
        self.center, self.width, self.amp = self.center[keep], self.width[keep], self.amp[keep]

    @property
    def onset(self) -> float:
        """Earliest wave start (centre - EDGE s.d.), 0 for an empty set."""
        return float(np.min(self.center - EDGE * self.width)) if self.names else 0.0

    @property
    def offset(self) -> float:
        """Latest wave end (centre + EDGE s.d.), 0 for an empty set."""
        return float(np.max(self.center + EDGE * self.width)) if self.names else 0.0

    def area(self) -> np.ndarray:
        """Time integral of the dipole (mV s): what a net-area axis measurement sees."""
        return (self.amp * (self.width * np.sqrt(2.0 * np.pi))[:, None]).sum(axis=0)

    def retime(self, onset: float, duration: float) -> None:
        """Stretch the set linearly so it spans ``[onset, onset + duration]`` (widths stretch too)."""
        old_on, old_len = self.onset, self.offset - self.onset
        factor = duration / old_len
        self.center = onset + (self.center - old_on) * factor
        self.width = self.width * factor


@dataclass
class HeartParams:
    """Everything that defines one record's beats, mutated in place by the diagnosis rules."""

    p: WaveSet          # atrial depolarisation, times from P onset
    qrs: WaveSet        # ventricular depolarisation, times from QRS onset
    t: WaveSet          # ST segment and T wave, times in units of QT from QRS onset
    lead_field: np.ndarray  # float[8, 3], this patient's torso and electrode placement
    heart_rate: float = 70.0        # bpm (mean atrial rate in sinus rhythm, ventricular in AF)
    pr: float = 0.16                # P onset -> QRS onset (s)
    qtc: float = 0.41               # Bazett-corrected QT (s)
    rhythm: str = "sinus"           # "sinus" or "afib"
    rsa: float = 0.02               # respiratory sinus arrhythmia, fraction of RR
    lf: float = 0.01                # low-frequency (Mayer wave) RR modulation, fraction of RR
    resp_hz: float = 0.25           # breathing rate
    rr_jitter: float = 0.01         # white RR variability, fraction of RR
    rr_cv: float = 0.0              # AF: coefficient of variation of the irregular RR
    av_block: str = ""              # "", "mobitz1" or "mobitz2"
    av_ratio: int = 0               # P waves per dropped QRS (every av_ratio-th P is blocked)
    pr_increment: float = 0.0       # Mobitz I: PR lengthening per conducted beat (s)
    f_wave_amp: float = 0.0         # AF fibrillatory waves, dipole amplitude (mV)
    f_wave_hz: float = 6.0
    beat_jitter: float = 0.03       # beat-to-beat amplitude s.d. (fraction)
    resp_amp_mod: float = 0.04      # respiratory modulation of QRS amplitude (fraction)
    qt_extra: float = 0.0           # QT added to the Bazett value (s), e.g. for a wide QRS
    axis_target: float = 45.0       # frontal QRS axis the patient was sampled with (degrees)
    orientation: np.ndarray = field(default_factory=lambda: np.eye(3))  # heart rotation in the chest
    qrs_gain: float = 1.0           # this patient's QRS voltage relative to the template
    ectopy: str = ""                # "", "atrial" (premature atrial beats) or "ventricular" (PVCs)
    ectopic_every: int = 0          # one premature beat in this many cycles
    ectopic_coupling: float = 0.0   # premature beat's interval after the beat before, fraction of the RR
    ectopic: HeartParams | None = None  # the ventricular ectopic beat's own waves (its QRS, its T)
    notes: dict[str, float] = field(default_factory=dict)  # rule outputs kept for tests and metadata

    def copy(self) -> HeartParams:
        out = HeartParams(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        out.p, out.qrs, out.t = self.p.copy(), self.qrs.copy(), self.t.copy()
        out.lead_field = self.lead_field.copy()
        out.orientation = self.orientation.copy()
        out.notes = dict(self.notes)
        out.ectopic = self.ectopic.copy() if self.ectopic is not None else None
        return out

    @property
    def qrs_duration(self) -> float:
        return self.qrs.offset - self.qrs.onset

    @property
    def p_duration(self) -> float:
        return self.p.offset - self.p.onset


@dataclass(frozen=True)
class BeatSchedule:
    """When each beat's parts start. NaN P onset: no P wave (AF); NaN QRS onset: blocked beat."""

    p_onset: np.ndarray
    qrs_onset: np.ndarray
    qt: np.ndarray

    @property
    def n_conducted(self) -> int:
        return int(np.sum(~np.isnan(self.qrs_onset)))


# --- patient sampling ---------------------------------------------------------------------------

def _rotation(rng: np.random.Generator, sd_deg: float) -> np.ndarray:
    """A small random 3-D rotation: the heart's orientation in this chest."""
    ax, ay, az = np.deg2rad(rng.normal(0.0, sd_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def normal_waves() -> tuple[WaveSet, WaveSet, WaveSet]:
    """The template beat of a healthy adult (amplitudes before per-patient scaling).

    P: right-atrial force (inferior, anterior) then left-atrial force (leftward, posterior), about
    100 ms in all, biphasic in V1. QRS (about 88 ms): septal force (rightward, anterior: q in I/V5/V6,
    r in V1), main left-ventricular force (left, inferior, slightly posterior: R in II ~1.2 mV, R in V5
    ~1.3 mV, S in V1/V2), terminal basal force (posterior-superior: S in V1-V4). T: concordant with QRS,
    anterior-left-inferior (upright in I, II, V2-V6, largest in V2-V4); asymmetric, two Gaussians
    ending at QT.
    """
    p = WaveSet.of(
        ("P_ra", 0.035, 0.014, (0.035, 0.085, -0.035)),
        ("P_la", 0.062, 0.015, (0.09, 0.05, 0.045)),
    )
    qrs = WaveSet.of(
        ("Q_septal", 0.0138, 0.0055, (-0.14, 0.05, -0.24)),
        ("R_main", 0.042, 0.0095, (1.05, 0.85, 0.45)),
        ("S_term", 0.068, 0.0098, (-0.22, -0.18, 0.55)),
    )
    t = WaveSet.of(
        ("T_up", 0.70, 0.10, (0.13, 0.06, -0.06)),
        ("T_main", 0.80, 0.08, (0.30, 0.14, -0.14)),
    )
    return p, qrs, t


def sample_patient(rng: np.random.Generator, age: float, sex: str) -> HeartParams:
    """A healthy heart in a particular chest: per-patient amplitudes, orientation, intervals, axis.

    Why per patient: records of one patient share this (PTB-XL has several records per patient), and a
    classifier must learn diagnoses across chests, not one template.
    """
    p, qrs, t = normal_waves()
    rotation = _rotation(rng, 7.0)
    young = float(np.clip(1.0 + 0.006 * (50.0 - age), 0.8, 1.25))   # voltage falls with age
    male = sex == "M"
    gain = float(rng.lognormal(0.0, 0.14) * young * (1.05 if male else 0.93))
    qrs.amp = qrs.amp @ rotation.T * gain
    qrs.amp[0] *= rng.lognormal(0.0, 0.25)                          # septal force varies widely
    t.amp = t.amp @ _rotation(rng, 12.0).T @ rotation.T * rng.lognormal(0.0, 0.18)
    p.amp = p.amp @ rotation.T * rng.lognormal(0.0, 0.18)
    field_ = dower_lead_field() + rng.normal(0.0, 0.04, (8, 3))      # electrode placement, torso
    qrs.retime(0.0, float(np.clip(rng.normal(0.090 if male else 0.085, 0.005), 0.078, 0.099)))
    p.retime(0.0, float(np.clip(rng.normal(0.100, 0.008), 0.085, 0.114)))
    params = HeartParams(
        p=p, qrs=qrs, t=t, lead_field=field_,
        heart_rate=float(np.clip(rng.normal(72.0, 9.0), 62.0, 97.0)),
        pr=float(np.clip(rng.normal(0.155, 0.016), 0.125, 0.192)),
        qtc=float(np.clip(rng.normal(0.405 if male else 0.415, 0.013), 0.375, 0.44)),
        rsa=float(rng.uniform(0.008, 0.03) * young),
        lf=float(rng.uniform(0.004, 0.015)),
        resp_hz=float(rng.uniform(0.18, 0.33)),
        rr_jitter=float(rng.uniform(0.004, 0.012)),
        beat_jitter=float(rng.uniform(0.015, 0.035)),
        resp_amp_mod=float(rng.uniform(0.02, 0.07)),
        axis_target=float(np.clip(rng.normal(70.0 - 0.5 * age, 22.0), -25.0, 88.0)),
        orientation=rotation,
        qrs_gain=gain,
    )
    params.pr = max(params.pr, params.p_duration + 0.03)
    set_frontal_axis(params, params.axis_target)
    return params


# --- axis, voltages -------------------------------------------------------------------------------

def frontal_axis(params: HeartParams) -> float:
    """Frontal QRS axis (degrees, -180..180) from the net QRS area in leads I and aVF."""
    vectors = lead_vectors(params.lead_field)
    area = params.qrs.area()
    return float(np.degrees(np.arctan2(vectors["aVF"] @ area, vectors["I"] @ area)))


def set_frontal_axis(params: HeartParams, degrees: float, wave: str = "R_main") -> None:
    """Turn one QRS wave's frontal (X, Y) force so the net-area axis in I/aVF lands on ``degrees``.

    The net area's size in the frontal plane is kept, so the rest of the morphology is untouched.
    """
    vectors = lead_vectors(params.lead_field)
    lead_i, lead_avf = vectors["I"], vectors["aVF"]
    k = params.qrs.index(wave)
    weight = params.qrs.width[k] * np.sqrt(2.0 * np.pi)
    rest = params.qrs.area() - params.qrs.amp[k] * weight
    current = np.array([lead_i @ params.qrs.area(), lead_avf @ params.qrs.area()])
    size = max(float(np.linalg.norm(current)), 1e-3)
    theta = np.radians(degrees)
    target = size * np.array([np.cos(theta), np.sin(theta)])
    z = params.qrs.amp[k, 2]
    system = np.array([[lead_i[0], lead_i[1]], [lead_avf[0], lead_avf[1]]]) * weight
    rhs = target - np.array([lead_i @ rest, lead_avf @ rest]) - weight * z * np.array(
        [lead_i[2], lead_avf[2]])
    params.qrs.amp[k, :2] = np.linalg.solve(system, rhs)


def render_template(waves: WaveSet, field_8: np.ndarray, fs: float = 1000.0,
                    span: tuple[float, float] | None = None) -> np.ndarray:
    """One isolated wave set as ``[12, n]`` mV (no rhythm, no noise): for voltage criteria."""
    start, stop = span or (waves.onset - 0.02, waves.offset + 0.02)
    t = np.arange(start, stop, 1.0 / fs)
    g = np.exp(-0.5 * ((t[None, :] - waves.center[:, None]) / waves.width[:, None]) ** 2)
    eight = (waves.amp @ field_8.T).T @ g
    return twelve_from_eight(eight)


def qrs_voltages(params: HeartParams) -> dict[str, np.ndarray]:
    """Per-lead QRS maxima and minima (mV), in STANDARD_LEADS order, from the template beat."""
    leads = render_template(params.qrs, params.lead_field)
    return {"max": leads.max(axis=1), "min": leads.min(axis=1)}


def sokolow_lyon(params: HeartParams) -> float:
    """S in V1 + the larger R in V5 or V6 (mV): > 3.5 mV is the Sokolow-Lyon LVH criterion."""
    v = qrs_voltages(params)
    i = {name: k for k, name in enumerate(STANDARD_LEADS)}
    return float(-v["min"][i["V1"]] + max(v["max"][i["V5"]], v["max"][i["V6"]]))


def limb_precordial_peak_to_peak(params: HeartParams) -> tuple[float, float]:
    """Largest QRS peak-to-peak amplitude among limb leads and among precordial leads (mV)."""
    v = qrs_voltages(params)
    pp = v["max"] - v["min"]
    return float(pp[:6].max()), float(pp[6:].max())


# --- rendering ------------------------------------------------------------------------------------

def _beat_scales(params: HeartParams, schedule: BeatSchedule, rng: np.random.Generator) -> np.ndarray:
    """Per beat amplitude factors: respiration-linked QRS modulation plus beat-to-beat jitter."""
    times = np.where(np.isnan(schedule.qrs_onset), schedule.p_onset, schedule.qrs_onset)
    times = np.nan_to_num(times)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    resp = 1.0 + params.resp_amp_mod * np.sin(2.0 * np.pi * params.resp_hz * times + phase)
    return resp[:, None] * (1.0 + params.beat_jitter * rng.standard_normal((times.size, 3)))


def render(params: HeartParams, schedule: BeatSchedule, fs: float, n_samples: int,
           rng: np.random.Generator) -> np.ndarray:
    """The noise-free 8 independent leads, ``float64[8, n_samples]`` in mV, for a beat schedule."""
    scales = _beat_scales(params, schedule, rng)
    centers, widths, amps = [], [], []
    parts = (
        (params.p, schedule.p_onset, None, 0),
        (params.qrs, schedule.qrs_onset, None, 1),
        (params.t, schedule.qrs_onset, schedule.qt, 2),
    )
    for waves, onset, stretch, part in parts:
        if not waves.names:
            continue
        present = ~np.isnan(onset)
        if stretch is None:
            c = onset[present, None] + waves.center[None, :]
            w = np.broadcast_to(waves.width[None, :], c.shape)
        else:
            c = onset[present, None] + waves.center[None, :] * stretch[present, None]
            w = waves.width[None, :] * stretch[present, None]
        a = (waves.amp @ params.lead_field.T)[None, :, :] * scales[present, part][:, None, None]
        centers.append(c.ravel())
        widths.append(w.ravel())
        amps.append(a.reshape(-1, 8))
    if not centers:
        return np.zeros((8, n_samples))
    return _gaussian_sum(np.concatenate(centers), np.concatenate(widths), np.concatenate(amps),
                         fs, n_samples)


def _gaussian_sum(center: np.ndarray, width: np.ndarray, amp: np.ndarray, fs: float,
                  n_samples: int) -> np.ndarray:
    """Sum of Gaussians (one per row of ``amp``) sampled at ``fs``: one sparse matrix product."""
    half = np.ceil(SUPPORT * width * fs).astype(np.int64)
    first = np.floor(center * fs).astype(np.int64) - half
    length = 2 * half + 2
    ptr = np.concatenate([[0], np.cumsum(length)])
    local = np.arange(ptr[-1]) - np.repeat(ptr[:-1], length)
    rows = np.repeat(first, length) + local
    t = rows / fs
    values = np.exp(-0.5 * ((t - np.repeat(center, length)) / np.repeat(width, length)) ** 2)
    inside = (rows >= 0) & (rows < n_samples)
    values = np.where(inside, values, 0.0)
    rows = np.clip(rows, 0, n_samples - 1)
    matrix = sparse.csc_matrix((values, rows, ptr), shape=(n_samples, center.size))
    return np.asarray((matrix @ amp).T)


def fibrillatory_waves(params: HeartParams, fs: float, n_samples: int,
                       rng: np.random.Generator) -> np.ndarray:
    """AF f-waves (8 leads): a wandering atrial dipole at 4-9 Hz with drifting rate and amplitude.

    Its direction is mostly right-inferior-anterior, so f-waves are largest in V1 and the inferior
    leads, as observed.
    """
    t = np.arange(n_samples) / fs
    dipole = np.zeros((3, n_samples))
    base_dir = np.array([-0.3, 0.6, -0.75])
    for _ in range(3):
        direction = base_dir + rng.normal(0.0, 0.35, 3)
        rate = params.f_wave_hz * rng.uniform(0.85, 1.15)
        drift = 0.6 * np.sin(2.0 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
        phase = 2.0 * np.pi * np.cumsum(rate + drift) / fs + rng.uniform(0, 2 * np.pi)
        envelope = 1.0 + 0.4 * np.sin(2.0 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 6.3))
        dipole += np.outer(direction / np.linalg.norm(direction), envelope * np.sin(phase))
    return params.lead_field @ dipole * (params.f_wave_amp / 3.0)
