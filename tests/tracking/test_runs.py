"""open_run under `mlflow run`: the started run is adopted once, and child runs stay children."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgml.tracking.runs import open_run


def test_children_of_an_adopted_run_are_new_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    started = client.create_run(client.create_experiment("projects"))  # what `mlflow run` does before ecgml starts
    monkeypatch.setenv("MLFLOW_RUN_ID", started.info.run_id)
    with open_run("ignored", tags={"ecgml.kind": "main"}) as parent:
        assert parent.info.run_id == started.info.run_id
        with open_run("projects", nested=True, tags={"ecgml.kind": "data"}) as child:
            assert child.info.run_id != parent.info.run_id  # MLflow alone would have adopted MLFLOW_RUN_ID here
        with open_run("projects", nested=True, tags={"ecgml.kind": "pretrain"}) as second:
            assert second.info.run_id not in (parent.info.run_id, child.info.run_id)
    assert client.get_run(started.info.run_id).data.tags["ecgml.kind"] == "main"
    for run_id, kind in ((child.info.run_id, "data"), (second.info.run_id, "pretrain")):
        run = client.get_run(run_id)
        assert run.data.tags["ecgml.kind"] == kind and run.data.tags["mlflow.parentRunId"] == started.info.run_id
