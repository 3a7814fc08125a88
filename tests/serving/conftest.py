"""A tiny 12-lead, 100 Hz classifier in a weights folder, for serving tests that need no training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.pretrained.conftest import tiny_weights


def ecg(fs: int = 100, seconds: float = 10.0) -> np.ndarray:
    """Spiky 1 Hz 'beats' of about 1 mV on 12 leads (amplitude like a real record's)."""
    t = np.arange(int(fs * seconds)) / fs
    beat = np.exp(-(((t % 1.0) - 0.3) ** 2) / (2 * 0.01**2))
    return np.stack([(0.6 + 0.1 * k) * beat + 0.05 * np.sin(2 * np.pi * 0.3 * t) for k in range(12)]).astype(np.float32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("serving") / "weights")
