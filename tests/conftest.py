"""Shared fixtures: the real sample folder (skipped with a reason when absent) and tiny trees."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REAL_SAMPLE = Path(os.environ.get("ECGML_REAL_SAMPLE", Path(__file__).resolve().parents[1].parent
                                  / "shared" / "real-sample"))


#: Which run and experiment MLflow uses when none is named: as the suite found them, for every test.
_RUN_IDENTITY = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")
_SUITE_ENV = {k: os.environ[k] for k in _RUN_IDENTITY if k in os.environ}


@pytest.fixture(autouse=True)
def _restore_mlflow_state() -> Iterator[None]:
    """Tests run ecgml in-process, and MLflow writes to the process: ``mlflow.set_experiment`` exports
    ``MLFLOW_EXPERIMENT_ID`` and keeps an active experiment, a training run sets HTTP retry defaults.

    Before each test the run identity is put back as the suite found it (a module-scoped fixture may have
    set it before this fixture could look); after each test every other variable a test added goes away.
    """
    _reset_run_identity()
    before = {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "ECGML_"))}
    yield
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "ECGML_"))]:
        if key not in before:
            del os.environ[key]
    os.environ.update(before)
    _reset_run_identity()


def _reset_run_identity() -> None:
    import sys

    for key in _RUN_IDENTITY:
        if key in _SUITE_ENV:
            os.environ[key] = _SUITE_ENV[key]
        else:
            os.environ.pop(key, None)
    fluent = sys.modules.get("mlflow.tracking.fluent")  # only if a test imported MLflow at all
    if fluent is not None and hasattr(fluent, "_active_experiment_id"):
        fluent._active_experiment_id = None
    service = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if service is not None and hasattr(service, "_tracking_uri"):  # else an earlier test's URI beats the env
        service._tracking_uri = None


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
