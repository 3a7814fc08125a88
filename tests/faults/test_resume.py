"""A job killed after the checkpoint of its FIRST epoch but before that epoch reached MLflow: ``--resume``
sends it (the re-log step once skipped epoch 0, whose index is falsy), so no epoch is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgml.config import DataConfig, PrepareConfig
from ecgml.train import runner
from ecgml.train.loop import OptimConfig
from ecgml.train.pipeline import ModelConfig, TrainConfig
from tests.data.trees import write_tiny_ptbxl


def test_a_kill_before_the_first_epoch_is_logged_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # restored afterwards (run_training sets defaults)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    monkeypatch.chdir(tmp_path)
    root = write_tiny_ptbxl(tmp_path / "ptbxl", n=40)
    config = TrainConfig(kind="pretrain", data=PrepareConfig(DataConfig("ptbxl", root, task="superdiagnostic",
                                                                        splits="1-6/7-8/9-10"),
                                                             cache_dir=tmp_path / "cache"),
                         model=ModelConfig("xresnet1d18", {"width": 0.25, "layers": [1, 1]}),
                         optim=OptimConfig(epochs=2, batch_size=8, patience=0), runs_dir=tmp_path / "runs",
                         experiment="kill", device="cpu", seed=1)
    real = runner.epoch_metrics

    def killed(record: object) -> dict[str, float]:  # the checkpoint of epoch 0 is on disk; the kill comes now
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "epoch_metrics", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run_training(config, progress=False)
    monkeypatch.setattr(runner, "epoch_metrics", real)
    (run_dir,) = (tmp_path / "runs").iterdir()
    client = mlflow.MlflowClient()
    assert client.get_run(run_dir.name).info.status == "KILLED"
    assert client.get_metric_history(run_dir.name, "val_macro_auc") == []

    outcome = runner.run_training(config, resume=True, progress=False)
    assert outcome.run_id == run_dir.name
    steps = sorted(m.step for m in client.get_metric_history(run_dir.name, "val_macro_auc"))
    assert steps == [0, 1]  # epoch 0 came from the checkpoint, epoch 1 from the resumed training
