"""MLflow run plumbing shared by every command: where to track, checking it answers, opening or resuming
a run, and the tags and inputs every run carries.

Under ``torchrun`` only rank 0 calls anything here; other ranks get :data:`None` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which URI and how to fix it."""


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite store ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def check_tracking_uri(uri: str | None = None, timeout: float = 5.0) -> str:
    """Fail fast, before any training, when the tracking store cannot be reached or written."""
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        probe = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(probe, timeout=timeout) as response:
                if response.status != 200:
                    raise TrackingError(f"tracking server {uri} answered {response.status} at /health")
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                return uri  # reachable; credentials are checked by the first real call
            raise TrackingError(f"tracking server {uri} answered HTTP {exc.code} at /health") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"tracking server {uri} is unreachable ({reason}); start it or set "
                                "MLFLOW_TRACKING_URI to a reachable store (default: sqlite:///mlflow.db)") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"tracking store {uri}: folder {folder} does not exist or is not writable")
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:"))
        if folder.exists() and not os.access(folder, os.W_OK):
            raise TrackingError(f"tracking store {uri} is not writable")
    return uri


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str:
    """The commit the code runs at (``unknown`` outside a git checkout), with ``-dirty`` if modified."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


@contextmanager
def open_run(
    experiment: str,
    *,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    system_metrics: bool = True,
) -> Iterator[Any]:
    """Start a run (or resume ``run_id``, or adopt the run ``mlflow run`` started) and end it cleanly.

    A run that raises is marked FAILED; a KeyboardInterrupt marks it KILLED. Either way what was
    already logged stays.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    run_id = run_id or (None if nested else os.environ.get("MLFLOW_RUN_ID"))
    if run_id is None:
        mlflow.set_experiment(experiment)
    run = mlflow.start_run(run_id=run_id, run_name=run_name, nested=nested, tags=dict(tags or {}),
                           log_system_metrics=system_metrics)
    status = "FINISHED"
    try:
        yield run
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        mlflow.end_run(status=status)


def log_json(obj: Any, artifact_file: str) -> None:
    """Log a JSON document (``config.json``, statistics) as an artifact of the active run."""
    import mlflow

    mlflow.log_dict(json.loads(json.dumps(obj, default=str)), artifact_file)


def log_split_inputs(splits: Mapping[str, pd.DataFrame], *, name: str, source: str, digest: str) -> None:
    """Log each split's records index as an MLflow dataset input with its split as context."""
    import mlflow

    for split, table in splits.items():
        index = table[[c for c in ("record_id", "patient_id", "fold") if c in table.columns]].reset_index(drop=True)
        dataset = mlflow.data.from_pandas(index, source=source, name=f"{name}-{split}",
                                          digest=f"{digest[:8]}-{split}")
        mlflow.log_input(dataset, context=split)
