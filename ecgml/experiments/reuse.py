"""Reuse of finished runs: a step with the same key (entry point and parameters) at the same clean git
commit is not run again, the way MLflow's multistep-workflow example does it.

A dirty or unknown checkout never reuses: the code that produced the old run may differ from what would
run now, so a result could silently come from other code.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

STEP_KEY = "ecgml.step_key"


def step_key(entry_point: str, params: dict[str, Any]) -> str:
    """A stable hash of an entry point and its parameters."""
    text = json.dumps({"entry_point": entry_point, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def reusable_commit(commit: str) -> bool:
    return commit not in ("", "unknown") and not commit.endswith("-dirty")


def find_finished(experiment: str, key: str, commit: str) -> Any | None:
    """The newest FINISHED run of ``experiment`` with this step key at ``commit`` (None if reuse is off)."""
    import mlflow

    from ecgml.tracking.runs import tracking_uri

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
