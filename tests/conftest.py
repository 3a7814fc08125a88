"""Shared fixtures: the real sample folder (skipped with a reason when absent) and tiny trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_SAMPLE = Path(os.environ.get("ECGML_REAL_SAMPLE", Path(__file__).resolve().parents[1].parent
                                  / "shared" / "real-sample"))


def _real(sub: str) -> Path:
    path = REAL_SAMPLE / sub
    if not path.exists():
        pytest.skip(f"real sample {path} is absent (set ECGML_REAL_SAMPLE to the shared/real-sample folder)")
    return path


@pytest.fixture(scope="session")
def real_ptbxl() -> Path:
    return _real("ptbxl")


@pytest.fixture(scope="session")
def real_ptbxl_metadata() -> Path:
    return _real("ptbxl-metadata")


@pytest.fixture(scope="session")
def real_g12ec() -> Path:
    return _real("g12ec")


@pytest.fixture(scope="session")
def real_challenge() -> Path:
    return _real("challenge-2021")


@pytest.fixture(scope="session")
def real_challenge_2020() -> Path:
    return _real("challenge-2020")
