"""Serving refuses signals that cannot be an ECG in millivolts, transposed arrays and empty requests,
with a message that says what the signal looks like and what to do; real records in mV pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgml.data.formats import read_header, read_matv4
from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.records import load_signal
from ecgml.data.sources.g12ec import G12EC_GAIN_CORRECTIONS
from ecgml.tracking.ecg_input import AMPLITUDE_BOUNDS_MV, REAL_RANGE_MV, typical_amplitude, unit_problem
from ecgml.tracking.pyfunc import EcgClassifier, InvalidEcgInput, log_pyfunc
from tests.serving.conftest import ecg as _ecg


def _refusal(weights: Path, row: dict, **kwargs: object) -> str:
    with pytest.raises(InvalidEcgInput) as caught:
        EcgClassifier(weights, **kwargs).predict_proba([row])
    return str(caught.value)


def test_typical_amplitude_ignores_spikes_and_a_dead_lead() -> None:
    x = _ecg()
    base = typical_amplitude(x)
    spiky = x.copy()
    spiky[:, ::150] += 40.0  # pacemaker-like spikes on 0.7% of samples
    dead = x.copy()
    dead[3] = 0.0
    assert np.ptp(spiky, axis=-1).min() > 20 * np.ptp(x, axis=-1).max()  # peak-to-peak is fooled 20-fold
    assert base <= typical_amplitude(spiky) < 2 * base
    assert typical_amplitude(dead) == pytest.approx(base, rel=0.1)
    assert typical_amplitude(x * 1000) == pytest.approx(base * 1000, rel=1e-5)
    assert typical_amplitude(np.zeros((12, 100))) == 0.0


@pytest.mark.parametrize(("scale", "looks_like"), [
    (1000.0, "looks like microvolts or raw ADC counts at 1000 units/mV"),
    (0.001, "looks like volts; multiply by 1000"),
    (200.0, "or raw ADC counts at 1000 units/mV"),  # counts at 200/mV: named too ("divide by the gain")
    (1e5, "times too large: it looks like raw ADC counts; subtract the baseline and divide by the gain"),
    (1e-6, "times too small: check the units"),
])
def test_wrong_units_are_named(weights: Path, scale: float, looks_like: str) -> None:
    message = _refusal(weights, {"signal": (_ecg() * scale).tolist(), "fs": 100})
    assert message.startswith("row 0: signal amplitude "), message
    assert looks_like in message and '"amplitude_bounds_mv": [low, high]' in message
    assert "\n" not in message


def test_bounds_hold_every_measured_real_record_with_margin() -> None:
    low, high = AMPLITUDE_BOUNDS_MV
    assert low * 4 < REAL_RANGE_MV[0] and REAL_RANGE_MV[1] * 3 < high  # what benchmarks/amplitude_bounds.py measured
    for real in REAL_RANGE_MV:
        assert unit_problem(real, AMPLITUDE_BOUNDS_MV) is None
        assert unit_problem(real * 1000, AMPLITUDE_BOUNDS_MV) is not None  # microvolts / counts at 1000/mV
        assert unit_problem(real * 200, AMPLITUDE_BOUNDS_MV) is not None  # counts at 200/mV
        assert unit_problem(real / 1000, AMPLITUDE_BOUNDS_MV) is not None  # volts


def test_noise_flat_transposed_and_empty_are_refused(weights: Path) -> None:
    noise = np.random.default_rng(0).uniform(-10, 10, (12, 1000))
    assert "outside the 0.03-15 mV accepted" in _refusal(weights, {"signal": noise.tolist(), "fs": 100})
    assert "flat signal" in _refusal(weights, {"signal": np.full((12, 1000), 0.7).tolist(), "fs": 100})
    transposed = _refusal(weights, {"signal": _ecg().T.tolist(), "fs": 100})
    assert transposed.startswith("row 0: signal looks transposed (1000 x 12") and "x.T.tolist()" in transposed
    named = _refusal(weights, {"signal": _ecg().T.tolist(), "fs": 100, "leads": list(STANDARD_LEADS)})
    assert named.startswith("row 0: signal looks transposed")
    with pytest.raises(InvalidEcgInput, match=r"^the request holds no records"):
        EcgClassifier(weights).predict_proba([])
    assert "below the model's 100 Hz" in _refusal(weights, {"signal": _ecg(50).tolist(), "fs": 50})


def test_overrides_accept_an_unusual_device(weights: Path, tmp_path: Path) -> None:
    import mlflow

    small = (_ecg() * 0.01).tolist()  # 0.008 mV: below the bounds
    assert "outside the 0.03-15 mV accepted" in _refusal(weights, {"signal": small, "fs": 100})
    row = {"signal": small, "fs": 100, "amplitude_bounds_mv": [0.001, 15]}
    per_row = EcgClassifier(weights).predict_proba([row])
    per_model = EcgClassifier(weights, amplitude_bounds=(0.001, 15.0)).predict_proba([{"signal": small, "fs": 100}])
    np.testing.assert_allclose(per_row, per_model)
    assert "must be [low, high] with 0 <= low < high" in _refusal(weights, {**row, "amplitude_bounds_mv": [5, 1]})

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("units")
    with mlflow.start_run():
        info = log_pyfunc(weights)
    loaded = mlflow.pyfunc.load_model(info.model_uri, model_config={"amplitude_bounds_mv": [0.001, 15]})
    frame = loaded.predict(pd.DataFrame([{"signal": small, "fs": 100}]))
    np.testing.assert_allclose(frame.to_numpy(), per_model, atol=1e-6)
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"^row 0: signal amplitude 0\.008 .* looks like volts"):
        mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame([{"signal": small, "fs": 100}]))


@pytest.mark.real_sample
def test_real_records_pass_in_millivolts_and_are_refused_in_raw_counts(
        weights: Path, real_ptbxl: Path, real_g12ec: Path) -> None:
    clf = EcgClassifier(weights)
    paths = [*sorted((real_ptbxl / "records100" / "00000").glob("*.hea"))[:20],
             *sorted((real_ptbxl / "records500" / "00000").glob("*.hea"))[:5], *sorted(real_g12ec.glob("*.hea"))]
    for header_path in paths:
        header = read_header(header_path)
        x = load_signal(header_path.with_suffix(""), STANDARD_LEADS, gain_corrections=dict(G12EC_GAIN_CORRECTIONS))
        probs = clf.predict_proba([{"signal": np.nan_to_num(x).tolist(), "fs": header.fs}])
        assert probs.shape == (1, 5), header_path
    # What a user who forgot the gain sends: the .mat file's integers as they are.
    raw = read_matv4(real_g12ec / "E07500.mat").data.astype(np.float32)
    message = _refusal(weights, {"signal": raw.tolist(), "fs": 500})
    assert "looks like microvolts or raw ADC counts" in message


def test_a_lead_sent_twice_is_refused_by_name(weights: Path, tmp_path: Path) -> None:
    """12 standard leads plus a second II: which copy the model reads would decide the answer."""
    from ecgml.data.formats import write_wfdb_record
    from ecgml.predict import predict_files

    x = _ecg()
    row = {"signal": np.vstack([x, x[1:2] * 0.5]).tolist(), "fs": 100, "leads": [*STANDARD_LEADS, "II"]}
    message = _refusal(weights, row)
    assert message.startswith("row 0: lead(s) II appear more than once") and "send each lead once" in message
    lower = {**row, "leads": [*STANDARD_LEADS[:-1], "avr"]}  # aVR under another spelling, V6 missing
    lower["signal"] = x.tolist()
    assert "lead(s) aVR appear more than once" in _refusal(weights, lower)

    write_wfdb_record(tmp_path, "twice", np.vstack([x, x[1:2] * 0.5]), 100, [*STANDARD_LEADS, "II"])
    (outcome,) = predict_files(EcgClassifier(weights), [tmp_path / "twice.hea"])
    assert outcome.status == "unreadable" and "lead(s) II appear more than once" in outcome.problems[-1]


def test_mostly_flat_records_are_refused_in_serving_and_predict(weights: Path, tmp_path: Path) -> None:
    """11 of 12 leads flat was scored `ok`; more than 3 of 12 flat is refused, 3 still pass."""
    from ecgml.data.formats import write_wfdb_record
    from ecgml.predict import predict_files
    from ecgml.tracking.ecg_input import max_flat_leads

    assert [max_flat_leads(n) for n in (12, 6, 3, 1)] == [3, 1, 0, 0]
    x = _ecg()
    eleven = x.copy()
    eleven[1:] = 0.0
    message = _refusal(weights, {"signal": eleven.tolist(), "fs": 100})
    assert message.startswith("row 0: 11 of the model's 12 leads are flat (II, III, aVR") and "at most 3" in message
    four, three = x.copy(), x.copy()
    four[8:] = 0.0
    three[9:] = 0.0
    assert "4 of the model's 12 leads are flat (V3, V4, V5, V6)" in _refusal(weights, {"signal": four.tolist(),
                                                                                       "fs": 100})
    assert EcgClassifier(weights).predict_proba([{"signal": three.tolist(), "fs": 100}]).shape == (1, 5)

    write_wfdb_record(tmp_path, "eleven", eleven, 100, list(STANDARD_LEADS))
    (outcome,) = predict_files(EcgClassifier(weights), [tmp_path / "eleven.hea"])
    assert outcome.status == "refused" and "11 of the model's 12 leads are flat" in outcome.problems[-1]
