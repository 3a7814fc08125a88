"""Each diagnosis rule is measurable on the generated waveform (noise-free model output).

Measurements are plain threshold methods (:mod:`ecgml.data.synth.measure`) on the signal; beats are
located with the model's schedule. Comparisons are paired where possible: the same seed is the same
patient, drawn normal and with the diagnosis.
"""

from __future__ import annotations

import numpy as np
import pytest

from ecgml.data.synth import measure
from ecgml.data.synth.model import qrs_voltages
from ecgml.data.synth.simulate import SimulatedEcg
from tests.data.synth.helpers import SEEDS, clean, middle_beat, pair


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


@pytest.mark.parametrize("seed", SEEDS)
def test_normal_intervals_and_voltages_are_adult_normals(seed: int) -> None:
    ecg = clean(["SR", "NORM"], seed)
    beat = middle_beat(ecg)
    assert 0.12 <= beat.pr <= 0.20
    assert 0.075 <= beat.qrs_duration <= 0.105
    assert beat.p_duration < 0.12
    assert 0.36 <= measure.qtc_bazett(beat.qt, 1.0) <= 0.45
    r_ii = measure.qrs_extremes(ecg.signal, ecg.fs, beat, "II")[0]
    assert 0.4 <= r_ii <= 2.2
    assert -30.0 <= measure.frontal_axis(ecg.signal, ecg.fs, beat) <= 90.0
    assert measure.sokolow_lyon(ecg.signal, ecg.fs, beat) < 3.5
    assert measure.t_peak(ecg.signal, ecg.fs, beat, "II") > 0.05          # upright T in II
    assert measure.t_peak(ecg.signal, ecg.fs, beat, "aVR") < 0.0          # inverted T in aVR


@pytest.mark.parametrize("seed", SEEDS)
def test_first_degree_av_block_prolongs_pr_beyond_200_ms(seed: int) -> None:
    (_, normal), (_, block) = pair(["1AVB"], seed)
    assert normal.pr < 0.200 < block.pr


@pytest.mark.parametrize("concept", ["CLBBB", "CRBBB"])
def test_complete_bundle_branch_blocks_widen_qrs_to_120_ms(concept: str) -> None:
    for seed in SEEDS:
        (_, normal), (_, block) = pair([concept], seed)
        assert normal.qrs_duration < 0.11
        assert block.qrs_duration >= 0.120, (concept, seed, block.qrs_duration)


@pytest.mark.parametrize("concept", ["IRBBB", "ILBBB", "IVCD"])
def test_incomplete_blocks_and_ivcd_widen_qrs_less(concept: str) -> None:
    for seed in SEEDS:
        (_, normal), (_, block) = pair([concept], seed)
        assert block.qrs_duration > normal.qrs_duration
        if concept == "IVCD":
            assert block.qrs_duration > 0.110
        else:
            assert 0.095 <= block.qrs_duration < 0.120, (concept, seed, block.qrs_duration)


def _terminal(x: np.ndarray, level: float = 0.1) -> float:
    """The last QRS extremum whose size exceeds ``level``: its sign tells the terminal force."""
    peaks = [i for i in range(1, x.size - 1) if abs(x[i]) > level and abs(x[i]) >= abs(x[i - 1])
             and abs(x[i]) >= abs(x[i + 1])]
    return float(x[peaks[-1]])


def _qrs(ecg: SimulatedEcg, beat: measure.Beat, lead: str) -> np.ndarray:
    a, b = int(beat.qrs_onset * ecg.fs), int(beat.qrs_offset * ecg.fs) + 1
    return measure.lead(ecg.signal, lead)[a:b] - measure.baseline(ecg.signal, ecg.fs, beat, lead)


@pytest.mark.parametrize("seed", SEEDS)
def test_rbbb_has_terminal_r_prime_in_v1_and_terminal_s_in_i_and_v6(seed: int) -> None:
    ecg = clean(["SR", "CRBBB"], seed)
    beat = middle_beat(ecg)
    assert _terminal(_qrs(ecg, beat, "V1")) > 0
    assert _terminal(_qrs(ecg, beat, "I"), 0.05) < 0
    assert _terminal(_qrs(ecg, beat, "V6"), 0.05) < 0


@pytest.mark.parametrize("seed", SEEDS)
def test_lbbb_is_negative_in_v1_positive_without_q_in_v6_with_discordant_t(seed: int) -> None:
    ecg = clean(["SR", "CLBBB"], seed)
    beat = middle_beat(ecg)
    v1 = _qrs(ecg, beat, "V1")
    assert -v1.min() > 2.0 * max(v1.max(), 0.0)
    v6 = _qrs(ecg, beat, "V6")
    first = v6[np.flatnonzero(np.abs(v6) > 0.05)[0]]
    assert first > 0, "no septal q in V6"
    assert measure.t_peak(ecg.signal, ecg.fs, beat, "V6") < 0 < measure.t_peak(ecg.signal, ecg.fs, beat, "V1")


@pytest.mark.parametrize("seed", SEEDS)
def test_fascicular_blocks_turn_the_frontal_axis(seed: int) -> None:
    lafb = clean(["SR", "LAFB"], seed)
    lpfb = clean(["SR", "LPFB"], seed)
    assert -90.0 <= measure.frontal_axis(lafb.signal, lafb.fs, middle_beat(lafb)) <= -45.0
    assert 90.0 <= measure.frontal_axis(lpfb.signal, lpfb.fs, middle_beat(lpfb)) <= 180.0


@pytest.mark.parametrize(("concept", "leads"), [
    ("ISCAN", ("V1", "V2", "V3", "V4")),
    ("ISCIN", ("II", "III", "aVF")),
    ("ISCLA", ("I", "aVL", "V5", "V6")),
])
def test_ischemia_depresses_st_and_inverts_t_in_its_leads(concept: str, leads: tuple[str, ...]) -> None:
    for seed in SEEDS:
        (ne, nb), (se, sb) = pair([concept], seed)
        st_normal = _mean([measure.st_level(ne.signal, ne.fs, nb, lead) for lead in leads])
        st_sick = _mean([measure.st_level(se.signal, se.fs, sb, lead) for lead in leads])
        assert abs(st_normal) < 0.02
        assert st_sick < st_normal - 0.05, (concept, seed, st_sick)
        assert _mean([measure.t_peak(se.signal, se.fs, sb, lead) for lead in leads]) < 0


@pytest.mark.parametrize("seed", SEEDS)
def test_nondiagnostic_t_flattens_t_without_st_shift(seed: int) -> None:
    (ne, nb), (se, sb) = pair(["NDT", "T_FLAT"], seed)
    for lead in ("II", "V5"):
        assert abs(measure.t_peak(se.signal, se.fs, sb, lead)) < 0.3 * abs(measure.t_peak(ne.signal, ne.fs, nb, lead))
        assert abs(measure.st_level(se.signal, se.fs, sb, lead)) < 0.02


@pytest.mark.parametrize("seed", SEEDS)
def test_long_qt_prolongs_qtc_beyond_470_ms(seed: int) -> None:
    (_, normal), (_, long_qt) = pair(["LNGQT"], seed)
    rr = 1.0  # heart rate fixed at 60 bpm
    assert measure.qtc_bazett(normal.qt, rr) < 0.45
    assert measure.qtc_bazett(long_qt.qt, rr) > 0.47
    assert long_qt.qt > normal.qt + 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_lvh_meets_sokolow_lyon_and_normal_does_not(seed: int) -> None:
    (ne, nb), (se, sb) = pair(["LVH"], seed)
    assert measure.sokolow_lyon(ne.signal, ne.fs, nb) < 3.5 < measure.sokolow_lyon(se.signal, se.fs, sb)


@pytest.mark.parametrize("seed", SEEDS)
def test_lvh_strain_depresses_lateral_st(seed: int) -> None:
    (ne, nb), (se, sb) = pair(["LVH", "LVH_STRAIN"], seed)
    lateral = ("I", "aVL", "V5", "V6")
    normal_st = _mean([measure.st_level(ne.signal, ne.fs, nb, lead) for lead in lateral])
    assert _mean([measure.st_level(se.signal, se.fs, sb, lead) for lead in lateral]) < normal_st - 0.03
    assert _mean([measure.t_peak(se.signal, se.fs, sb, lead) for lead in lateral]) < 0


@pytest.mark.parametrize("seed", SEEDS)
def test_rvh_gives_dominant_r_in_v1_and_right_axis(seed: int) -> None:
    ecg = clean(["SR", "RVH"], seed)
    beat = middle_beat(ecg)
    r, s = measure.qrs_extremes(ecg.signal, ecg.fs, beat, "V1")
    assert r > -s
    assert measure.frontal_axis(ecg.signal, ecg.fs, beat) > 90.0


@pytest.mark.parametrize("seed", SEEDS)
def test_septal_hypertrophy_deepens_lateral_q_and_raises_r_in_v1(seed: int) -> None:
    (ne, nb), (se, sb) = pair(["SEHYP"], seed)
    for lead in ("I", "V6"):
        assert _qrs(se, sb, lead)[:15].min() < _qrs(ne, nb, lead)[:15].min() - 0.1
    assert _qrs(se, sb, "V1")[:15].max() > _qrs(ne, nb, "V1")[:15].max() + 0.1


@pytest.mark.parametrize("seed", SEEDS)
def test_left_atrial_enlargement_widens_p_beyond_120_ms_with_negative_terminal_p_in_v1(seed: int) -> None:
    (_, nb), (se, sb) = pair(["LAO/LAE"], seed)
    assert nb.p_duration < 0.12 < sb.p_duration
    a, b = int(sb.p_onset * se.fs), int(sb.p_offset * se.fs)
    v1 = measure.lead(se.signal, "V1")[a:b]
    assert v1[len(v1) // 2:].min() < -0.05


@pytest.mark.parametrize(("concept", "leads"), [("IMI", ("III", "aVF")), ("ASMI", ("V1", "V2")),
                                                 ("AMI", ("V2", "V3"))])
def test_infarcts_leave_q_waves_in_their_leads(concept: str, leads: tuple[str, ...]) -> None:
    for seed in SEEDS:
        (ne, nb), (se, sb) = pair([concept], seed)
        for lead in leads:
            initial_sick = _qrs(se, sb, lead)[:12]       # first 24 ms
            initial_normal = _qrs(ne, nb, lead)[:12]
            assert initial_sick.min() < -0.1, (concept, seed, lead)
            assert initial_sick.min() < initial_normal.min() - 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_second_degree_block_drops_qrs_complexes(seed: int) -> None:
    ecg = clean(["SR", "2AVB"], seed, heart_rate=None)
    seconds = ecg.signal.shape[1] / ecg.fs
    inside = (ecg.schedule.p_onset > 0.05) & (ecg.schedule.p_onset < seconds - 0.5)
    p_waves = int(inside.sum())
    detected = measure.detect_qrs(ecg.signal, ecg.fs)
    assert len(detected) < p_waves
    blocked = inside & np.isnan(ecg.schedule.qrs_onset)
    assert blocked.any()
    magnitude = measure.spatial_magnitude(ecg.signal)
    for onset in ecg.schedule.p_onset[blocked]:
        window = magnitude[int(onset * ecg.fs): int((onset + 0.1) * ecg.fs)]
        assert window.max() > 0.04, "a blocked beat still shows its P wave"
        assert not np.any((detected > onset) & (detected < onset + 0.35)), "no QRS after a blocked P"


@pytest.mark.parametrize("seed", SEEDS)
def test_rhythms_have_their_rates_and_regularity(seed: int) -> None:
    def rr_stats(concepts: list[str]) -> tuple[float, float]:
        ecg = clean(concepts, seed, heart_rate=None)
        rr = np.diff(measure.detect_qrs(ecg.signal, ecg.fs))
        return 60.0 / rr.mean(), rr.std() / rr.mean()

    sr_rate, sr_cv = rr_stats(["SR", "NORM"])
    assert 58.0 <= sr_rate <= 100.0 and sr_cv < 0.06
    assert rr_stats(["STACH"])[0] > 100.0
    assert rr_stats(["SBRAD"])[0] < 60.0
    assert rr_stats(["SARRH"])[1] > sr_cv
    af = clean(["AFIB"], seed, heart_rate=None)
    assert np.isnan(af.schedule.p_onset).all()
    assert rr_stats(["AFIB"])[1] > 0.08


@pytest.mark.parametrize("seed", SEEDS)
def test_low_voltage_keeps_every_limb_lead_under_half_a_millivolt(seed: int) -> None:
    ecg = clean(["SR", "LVOLT"], seed)
    beat = middle_beat(ecg)
    for lead in ("I", "II", "III", "aVR", "aVL", "aVF"):
        r, s = measure.qrs_extremes(ecg.signal, ecg.fs, beat, lead)
        assert r - s < 0.5 * 1.1  # 10 % beat-to-beat and respiratory variation allowed


def test_model_voltages_follow_the_labels() -> None:
    """Criteria on the model parameters: voltage caps hold without the label, for many patients."""
    for seed in range(40):
        normal = clean(["SR", "NORM"], seed).params
        limb_pp = qrs_voltages(normal)["max"][:6] - qrs_voltages(normal)["min"][:6]
        assert limb_pp.max() >= 0.6 - 1e-9
        low = clean(["SR", "LVOLT"], seed).params
        low_pp = qrs_voltages(low)["max"][:6] - qrs_voltages(low)["min"][:6]
        assert low_pp.max() < 0.5
