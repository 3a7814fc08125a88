"""Tuning tests run studies in-process too, and MLflow writes to the process environment
(``mlflow.set_experiment`` exports ``MLFLOW_EXPERIMENT_ID``) and keeps an active experiment: put both back after
every test so later tests, and the worker processes they start, see the environment they started with."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_mlflow_state() -> Iterator[None]:
    before = {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "ECGML_"))}
    yield
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "ECGML_"))]:
        if key not in before:
            del os.environ[key]
    os.environ.update(before)
    from mlflow.tracking import fluent

    if hasattr(fluent, "_active_experiment_id"):
        fluent._active_experiment_id = None
