"""What an in-process ``ecgml main`` of a test needs around it: its own folder and store, one thread."""

from __future__ import annotations

from pathlib import Path

import pytest


def isolate_main_job(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in ``folder`` with a SQLite store of its own, one thread, outside any active run; the checkout under
    test may be dirty (reuse is then off, by design), so it passes for a clean commit."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setattr("ecgml.tracking.runs.git_commit", lambda *_: "0123abcd")
