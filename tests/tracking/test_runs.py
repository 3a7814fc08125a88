"""open_run under `mlflow run`: the started run is adopted once, and child runs stay children."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgml.tracking.runs import open_run
from tests.tracking.test_mlflow_run import use_store


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


def test_a_child_is_the_child_of_the_run_named_not_of_the_active_one(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A calibration opened while the sweep run is active belongs under the training run it calibrates,
    which has ended; MLflow's nested=True alone would file it under the sweep."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    client = mlflow.MlflowClient(tracking_uri=uri)
    with open_run("sweeps", tags={"ecgml.kind": "sweep"}) as sweep:
        with open_run("sweeps", parent_run_id=sweep.info.run_id, tags={"ecgml.kind": "train"}) as trained:
            pass
        with open_run("sweeps", run_name="calibrate it", parent_run_id=trained.info.run_id,
                      tags={"ecgml.kind": "calibrate"}) as calibration:
            assert mlflow.active_run().info.run_id == calibration.info.run_id
        assert mlflow.active_run().info.run_id == sweep.info.run_id  # the sweep is active again afterwards
    run = client.get_run(calibration.info.run_id)
    assert run.data.tags["mlflow.parentRunId"] == trained.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["ecgml.kind"] == "calibrate" and run.info.run_name == "calibrate it"
    assert run.data.tags["mlflow.source.name"]  # the context tags start_run would have added
    assert client.get_run(trained.info.run_id).data.tags["mlflow.parentRunId"] == sweep.info.run_id

def test_step_experiments_get_a_description_and_a_users_is_kept(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from ecgml.defaults import (
        CALIBRATE_EXPERIMENT,
        EVALUATE_EXPERIMENT,
        FINETUNE_EXPERIMENT,
        PRETRAIN_EXPERIMENT,
        PRETRAINED_EXPERIMENT,
        STANDALONE_EXPERIMENT,
        STUDY_EXPERIMENT,
        TUNE_EXPERIMENT,
    )
    from ecgml.tracking.mlflow_project import STEP_EXPERIMENTS
    from ecgml.tracking.run_names import EXPERIMENT_DESCRIPTIONS
    from ecgml.tracking.runs import NOTE_TAG

    steps = {PRETRAIN_EXPERIMENT, PRETRAINED_EXPERIMENT, STANDALONE_EXPERIMENT, FINETUNE_EXPERIMENT,
             CALIBRATE_EXPERIMENT, EVALUATE_EXPERIMENT, STUDY_EXPERIMENT, TUNE_EXPERIMENT}
    assert steps | set(STEP_EXPERIMENTS.values()) <= set(EXPERIMENT_DESCRIPTIONS)
    assert "params.fraction = '0.1'" in EXPERIMENT_DESCRIPTIONS[FINETUNE_EXPERIMENT]  # how to compare
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_experiment(STANDALONE_EXPERIMENT, tags={NOTE_TAG: "my baselines"})
    for name in (FINETUNE_EXPERIMENT, STANDALONE_EXPERIMENT, "mine"):
        with open_run(name, system_metrics=False):
            pass
    assert client.get_experiment_by_name(FINETUNE_EXPERIMENT).tags[NOTE_TAG] == EXPERIMENT_DESCRIPTIONS[
        FINETUNE_EXPERIMENT]
    assert client.get_experiment_by_name(STANDALONE_EXPERIMENT).tags[NOTE_TAG] == "my baselines"
    assert NOTE_TAG not in client.get_experiment_by_name("mine").tags  # ecgml does not know what it holds
    # A description the user writes after ecgml's stays too.
    finetune = client.get_experiment_by_name(FINETUNE_EXPERIMENT).experiment_id
    client.set_experiment_tag(finetune, NOTE_TAG, "edited")
    with open_run(FINETUNE_EXPERIMENT, system_metrics=False):
        pass
    assert client.get_experiment(finetune).tags[NOTE_TAG] == "edited"


def test_the_experiment_mlflow_run_creates_for_a_step_is_described(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from ecgml.tracking.mlflow_project import ProjectExperimentProvider
    from ecgml.tracking.run_names import EXPERIMENT_DESCRIPTIONS
    from ecgml.tracking.runs import NOTE_TAG

    use_store(monkeypatch, f"sqlite:///{tmp_path / 'mlflow.db'}")
    provider = ProjectExperimentProvider()
    provider._step = "calibrate"  # what in_context found for `mlflow run . -e calibrate`
    experiment = provider.get_experiment_id()
    assert mlflow.MlflowClient().get_experiment(experiment).tags[NOTE_TAG] == EXPERIMENT_DESCRIPTIONS[
        "ecgml-calibrate"]
