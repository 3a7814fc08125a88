"""Pure signal functions."""

from __future__ import annotations

import numpy as np
import pytest

from ecgml.data.leads import resolve_leads
from ecgml.data.signal import (
    Preprocessing,
    RunningStats,
    bandpass,
    fft_view,
    fit_standardizer,
    flat_leads,
    nan_to_zero,
    pad_or_crop,
    resample,
    select_leads,
    standardize,
)


def _sine(freq: float, fs: float, seconds: float = 10.0) -> np.ndarray:
    t = np.arange(int(fs * seconds)) / fs
    return np.sin(2 * np.pi * freq * t)[None, :].astype(np.float32)


@pytest.mark.parametrize("fs_out", [250, 100, 50])
def test_resample_keeps_in_band_content(fs_out: int) -> None:
    x = _sine(5.0, 500)
    y = resample(x, 500, fs_out)
    assert y.shape == (1, fs_out * 10) and y.dtype == np.float32
    np.testing.assert_allclose(y[0, 50:-50], _sine(5.0, fs_out)[0, 50:-50], atol=0.02)


def test_resample_removes_what_the_new_rate_cannot_carry() -> None:
    x = _sine(60.0, 500)  # above the 50 Hz Nyquist of 100 Hz: must not alias into the band
    assert np.abs(resample(x, 500, 100)[0, 20:-20]).max() < 0.05


def test_bandpass_removes_baseline_wander_keeps_qrs_band() -> None:
    wander = _sine(0.1, 500) * 2
    qrs_band = _sine(10.0, 500)
    y = bandpass(wander + qrs_band, 500, 0.5, 40.0)
    np.testing.assert_allclose(y[0, 500:-500], qrs_band[0, 500:-500], atol=0.05)
    with pytest.raises(ValueError, match="must be below"):
        bandpass(wander, 500, 40.0, 0.5)


def test_pad_or_crop() -> None:
    x = np.arange(10, dtype=np.float32)[None]
    np.testing.assert_array_equal(pad_or_crop(x, 4), [[3, 4, 5, 6]])
    np.testing.assert_array_equal(pad_or_crop(x, 4, "start"), [[0, 1, 2, 3]])
    np.testing.assert_array_equal(pad_or_crop(x, 12)[0, 10:], [0, 0])


def test_lead_selection_by_name() -> None:
    x = np.arange(12)[:, None] * np.ones((12, 3))
    available = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    np.testing.assert_array_equal(select_leads(x, available, ["aVR", "V2"])[:, 0], [3, 7])
    assert resolve_leads("3") == ("I", "II", "V2")
    assert resolve_leads("avl, I") == ("aVL", "I")
    with pytest.raises(ValueError, match="unknown lead selection"):
        resolve_leads("I,V7")


def test_standardizer_and_running_stats_agree() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[[1.0], [-2.0], [0.5]], scale=[[1.0], [3.0], [0.1]], size=(20, 3, 400)).astype(np.float32)
    mean, std = fit_standardizer(x)
    running = RunningStats(3)
    for record in x:
        running.update(record)
    r_mean, r_std = running.result()
    np.testing.assert_allclose(r_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r_std, std, rtol=1e-4)
    z = standardize(x[0], mean, std)
    assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.2


def test_fft_views() -> None:
    x = _sine(5.0, 100)
    magnitude = fft_view(x, "magnitude")
    assert magnitude.shape == (1, 501) and int(np.argmax(magnitude[0])) == 50  # 5 Hz at 0.1 Hz bins
    np.testing.assert_allclose(np.hypot(fft_view(x, "real"), fft_view(x, "imag")), magnitude, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="unknown FFT view"):
        fft_view(x, "phase")  # type: ignore[arg-type]


def test_nan_and_flat_leads() -> None:
    x = np.ones((3, 10), np.float32)
    x[0] = np.linspace(0, 1, 10)
    x[1, 2] = np.nan
    y, count = nan_to_zero(x)
    assert count == 1 and not np.isnan(y).any()
    np.testing.assert_array_equal(flat_leads(y), [False, False, True])


def test_preprocessing_pipeline_and_validation() -> None:
    pre = Preprocessing(fs=100, leads=("I", "II"), seconds=2.5)
    y = pre.apply(np.ones((2, 5000), np.float32), 500)
    assert y.shape == (2, 250) and y.flags.c_contiguous
    assert pre.to_dict()["leads"] == ["I", "II"]
    with pytest.raises(ValueError, match="empty"):
        Preprocessing(bandpass_low=40, bandpass_high=1)
    with pytest.raises(ValueError, match="positive"):
        Preprocessing(fs=0)
