"""Reuse of finished runs: a step with the same key at the same clean git commit is not run again, the way MLflow's
multistep-workflow example does it. One get-or-run helper serves ``ecgml main`` and the sweeps.

A key holds the step's entry point and parameters *and what it read*: :func:`data_fingerprint` of each data tree
(the generator config of a synthetic tree, else the names, sizes and modification times of its files, as the
cache digest does), so a step is retrained when its data changed, not only when its path did.

A dirty or unknown checkout never reuses: the code that produced the old run may differ from what would
run now, so a result could silently come from other code.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STEP_KEY = "ecgml.step_key"
#: The file a synthetic tree's generator writes last, holding the config that decides its bytes.
SYNTH_MARKER = "SYNTH.json"


def step_key(entry_point: str, params: dict[str, Any]) -> str:
    """A stable hash of an entry point and its parameters."""
    text = json.dumps({"entry_point": entry_point, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def data_fingerprint(root: Path) -> str:
    """What a step's key holds of a data tree: its content's identity, not its path.

    A synthetic tree: a hash of its ``SYNTH.json`` (the generator config and label counts, written last, so a
    complete tree only). Any other tree: a hash of every file's relative name, size and modification time, the
    inputs the cache digest uses. A missing folder fingerprints as ``missing``, so it never matches real data.
    """
    root = Path(root)
    marker = root / SYNTH_MARKER
    if marker.is_file():
        return "synth:" + hashlib.sha256(marker.read_bytes()).hexdigest()[:24]
    if not root.is_dir():
        return "missing"
    hasher = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            st = path.stat()
            hasher.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "files:" + hasher.hexdigest()[:24]


def reusable_commit(commit: str) -> bool:
    return commit not in ("", "unknown") and not commit.endswith("-dirty")


def find_finished(experiment: str, key: str, commit: str) -> Any | None:
    """The newest FINISHED run of ``experiment`` with this step key at ``commit`` (None if reuse is off)."""
    import mlflow

    from ecgml.tracking.store import tracking_uri

    if not reusable_commit(commit):
        return None
    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id],
                              filter_string=f"tags.`{STEP_KEY}` = '{key}' and tags.git_commit = '{commit}' "
                                            "and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


@dataclass(frozen=True)
class Step:
    """Which run served a step: a finished one found by its key (``reused``, with ``found``), or a new one."""

    run_id: str
    reused: bool
    found: Any | None = None

    def metric(self, name: str, default: float = float("nan")) -> float:
        """A metric of the reused run (``default`` for a new run: its caller has the outcome)."""
        return float(self.found.data.metrics.get(name, default)) if self.found is not None else default


def get_or_run(experiment: str, key: str, commit: str, run: Callable[[], str]) -> Step:
    """The finished run with ``key`` at ``commit`` if there is one, else ``run()`` (which returns the new run's id).

    ``run`` must tag its run with ``STEP_KEY = key`` (and ``git_commit``), so the next call finds it.
    """
    found = find_finished(experiment, key, commit)
    if found is not None:
        return Step(str(found.info.run_id), True, found)
    return Step(str(run()), False)
