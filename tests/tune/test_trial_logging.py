"""The MLflow trial logger with a scripted stand-in for training (fast and deterministic): every trial is a nested
child run with the study's name and tags, its parameters, per-epoch values, final value and final state, and the
parent run records the best trial and its run id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ecgml.config import DataConfig, PrepareConfig
from ecgml.train.loop import EpochRecord
from ecgml.train.pipeline import TrainConfig
from ecgml.train.runner import RunOutcome
from ecgml.tune import logger
from ecgml.tune.space import SearchSpace, parse_overrides
from ecgml.tune.spec import TuneSpec
from ecgml.tune.study import RunSettings, run_study

#: Validation macro AUC per trial number, reported at each of three epochs; None raises.
SCRIPT: dict[int, float | None] = {0: 0.9, 1: 0.5, 2: 0.95, 3: None}


def _scripted_training(config: TrainConfig, *, progress: bool = True, parent_run_id: str | None = None,
                       extra_tags: dict[str, str] | None = None, on_epoch: Any = None, **_: Any) -> RunOutcome:
    """Opens a child run exactly as run_training does, logs per-epoch AUC and calls the pruning hook."""
    import mlflow

    from ecgml.tracking.runs import open_run

    tags = {**(extra_tags or {}), "mlflow.parentRunId": str(parent_run_id), "ecgml.kind": config.kind}
    number = int(tags[logger.NUMBER_TAG])
    with open_run(config.experiment, run_name=config.run_name, tags=tags, nested=True, system_metrics=False) as run:
        mlflow.log_params({"lr": config.optim.lr, "batch_size": config.optim.batch_size})
        value = SCRIPT[number]
        if value is None:
            raise RuntimeError("scripted failure")
        for epoch in range(3):
            mlflow.log_metric("val_macro_auc", value, step=epoch)
            on_epoch(EpochRecord(epoch, 0.5, 0.5, value, 1e-3, 0.01, 100.0))
        return RunOutcome(run.info.run_id, 2, value, value, None, {})


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import ecgml.train.runner
    import ecgml.tune.study

    monkeypatch.setattr(ecgml.train.runner, "run_training", _scripted_training)
    monkeypatch.setattr(ecgml.tune.study, "prepare_data", lambda spec: None)  # no dataset behind the script
    monkeypatch.setattr(ecgml.tune.study, "log_study_inputs", lambda prepared, spec, parent: None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_trial_states_values_and_best_reach_mlflow(scripted: Path) -> None:
    import mlflow
    import optuna

    data = PrepareConfig(DataConfig(source="ptbxl", root=scripted / "ptbxl", task="superdiagnostic"),
                         cache_dir=scripted / "cache")
    base = TrainConfig(kind="pretrain", data=data, runs_dir=scripted / "runs", experiment="tune-log")
    space = SearchSpace.default("pretrain").narrowed(parse_overrides(["backbone=xresnet1d18", "crop_s=2.5"]))
    spec = TuneSpec(stage="pretrain", space=space, base=base, n_trials=4, pruner="median", pruner_startup_trials=1,
                    pruner_warmup_epochs=0, sampler="random", tags={"team": "ecg", "purpose": "test"})
    lines: list[str] = []
    settings = RunSettings(storage=str(scripted / "journal.log"), heartbeat_interval=1, register=False)
    result = run_study(spec, "logged", settings, echo=lines.append)

    study = optuna.load_study(study_name="logged", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(scripted / "journal.log"))))
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE", "FAIL"]
    assert result.best_number == 2 and result.best_value == pytest.approx(0.95)
    assert sum("trial 1 PRUNED" in line for line in lines) == 1  # a progress line per trial

    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_number = {int(r.data.tags[logger.NUMBER_TAG]): r for r in children}
    assert sorted(by_number) == [0, 1, 2, 3]
    expected = {0: ("COMPLETE", "FINISHED"), 1: ("PRUNED", "KILLED"), 2: ("COMPLETE", "FINISHED"),
                3: ("FAIL", "FAILED")}
    for number, (state, status) in expected.items():
        run = by_number[number]
        assert (run.data.tags[logger.STATE_TAG], run.info.status) == (state, status), number
        assert run.data.tags[logger.STUDY_TAG] == "logged"
        assert run.data.tags["team"] == "ecg" and run.data.tags["purpose"] == "test"
        trial = study.trials[number]
        assert trial.user_attrs[logger.RUN_ID_ATTR] == run.info.run_id
        for name, value in trial.params.items():
            assert run.data.params[name] == str(value)
    assert float(by_number[2].data.tags[logger.VALUE_TAG]) == pytest.approx(0.95)
    assert "scripted failure" in by_number[3].data.tags[logger.REASON_TAG]
    assert "pruned after epoch 1" in by_number[1].data.tags[logger.REASON_TAG]
    assert [m.step for m in client.get_metric_history(by_number[0].info.run_id, "val_macro_auc")] == [0, 1, 2]

    assert parent.info.status == "FINISHED" and parent.data.tags[logger.STUDY_TAG] == "logged"
    assert parent.data.tags["team"] == "ecg"
    assert parent.data.tags["optuna.best_trial_number"] == "2"
    assert parent.data.tags["optuna.best_trial_run_id"] == by_number[2].info.run_id
    assert parent.data.metrics["best_value"] == pytest.approx(0.95)
    assert (parent.data.metrics["n_complete"], parent.data.metrics["n_pruned"], parent.data.metrics["n_fail"]) == (
        2, 1, 1)
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"trials.csv", "search_space.json",
                                                                          "base_config.json"}
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "trial_value")] == [0, 2]


def test_a_live_trial_taken_for_dead_is_not_counted_twice(scripted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker fails a trial whose heartbeat was late (and queues its retry) while it still runs: the
    worker neither crashes nor tells a result; its run ends FAIL, and the retry fills the slot."""
    import mlflow
    import optuna

    import ecgml.train.runner
    from ecgml.tune.storage import open_storage
    from ecgml.tune.worker import StaleTrialRetry

    journal = str(scripted / "late.journal")

    def declared_dead(config: TrainConfig, **kwargs: Any) -> RunOutcome:
        number = int(kwargs["extra_tags"][logger.NUMBER_TAG])
        if number == 0:  # what fail_stale_trials in another worker does to this very trial
            other = optuna.load_study(study_name="late", storage=open_storage(journal, heartbeat_interval=1))
            frozen = other.trials[0]
            other._storage.set_trial_state_values(frozen._trial_id, optuna.trial.TrialState.FAIL)
            StaleTrialRetry()(other, other._storage.get_trial(frozen._trial_id))
        return _scripted_training(config, **kwargs)

    monkeypatch.setattr(ecgml.train.runner, "run_training", declared_dead)
    data = PrepareConfig(DataConfig(source="ptbxl", root=scripted / "ptbxl", task="superdiagnostic"),
                         cache_dir=scripted / "cache")
    base = TrainConfig(kind="pretrain", data=data, runs_dir=scripted / "runs", experiment="tune-late")
    spec = TuneSpec(stage="pretrain", space=SearchSpace.default("pretrain"), base=base, n_trials=1, pruner="none")
    result = run_study(spec, "late", RunSettings(storage=journal, heartbeat_interval=1, register=False),
                       echo=lambda line: None)
    study = optuna.load_study(study_name="late", storage=open_storage(journal, heartbeat_interval=1))
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert study.trials[1].params == study.trials[0].params and result.counts["complete"] == 1
    runs = {int(r.data.tags[logger.NUMBER_TAG]): r for r in mlflow.MlflowClient().search_runs(
        [mlflow.MlflowClient().get_experiment_by_name("tune-late").experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")}
    assert (runs[0].info.status, runs[0].data.tags[logger.STATE_TAG]) == ("FAILED", "FAIL")
    assert (runs[1].info.status, runs[1].data.tags[logger.STATE_TAG]) == ("FINISHED", "COMPLETE")
