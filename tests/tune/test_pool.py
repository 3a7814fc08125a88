"""A launched tuning worker (``python -m ecgml.tune.pool``) before its study is ready: it needs the storage in
its environment, and it stops quietly when its launcher's set-up fails (EOF instead of a study name)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ecgml.tune.pool import ENTRY


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ECGML_OPTUNA_STORAGE", "MLFLOW_RUN_ID")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def test_a_worker_without_storage_is_a_clear_error() -> None:
    done = subprocess.run([sys.executable, "-m", ENTRY, "--worker-index", "1"], env=_env(), input="s\n",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "needs ECGML_OPTUNA_STORAGE" in done.stderr


def test_a_worker_told_nothing_stops_quietly(tmp_path: Path) -> None:
    journal, tracking = tmp_path / "j.log", f"sqlite:///{tmp_path / 'm.db'}"
    done = subprocess.run([sys.executable, "-m", ENTRY, "--worker-index", "1"], input="",
                          env=_env(ECGML_OPTUNA_STORAGE=str(journal), MLFLOW_TRACKING_URI=tracking),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "" and not journal.exists() and not (tmp_path / "m.db").exists()
