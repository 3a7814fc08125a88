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
from tests.mlflow_store import seeded_sqlite_uri


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


_SIGTERM_JOB = """
import os, signal, sys
from pathlib import Path
from ecgml.config import DataConfig, PrepareConfig
from ecgml.train import runner
from ecgml.train.loop import OptimConfig
from ecgml.train.pipeline import ModelConfig, TrainConfig

tmp = Path(sys.argv[1])
config = TrainConfig(kind="pretrain", data=PrepareConfig(DataConfig("ptbxl", tmp / "ptbxl", task="superdiagnostic",
                                                                    splits="1-6/7-8/9-10"), cache_dir=tmp / "cache"),
                     model=ModelConfig("xresnet1d18", {"width": 0.25, "layers": [1, 1]}),
                     optim=OptimConfig(epochs=3, batch_size=8, patience=0), runs_dir=tmp / "runs",
                     experiment="term", device="cpu", seed=1)
real = runner.epoch_metrics

def terminated(record):  # the checkpoint of epoch 1 is on disk; `docker stop` comes now
    os.kill(os.getpid(), signal.SIGTERM)
    return real(record)

runner.epoch_metrics = terminated
try:
    runner.run_training(config, progress=False)
except KeyboardInterrupt as exc:
    print(type(exc).__name__)
    sys.exit(3)
"""


def test_sigterm_stops_training_like_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What docker stop, Slurm and Kubernetes send: the run is marked KILLED (not left RUNNING), the
    checkpoint is kept and the command that continues the same run is printed."""
    import os
    import subprocess
    import sys

    import mlflow

    uri = seeded_sqlite_uri(tmp_path / "mlflow.db")
    write_tiny_ptbxl(tmp_path / "ptbxl", n=40)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
                                                            "MLFLOW_EXPERIMENT_NAME")}
    env.update(MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-c", _SIGTERM_JOB, str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, (done.returncode, done.stderr[-3000:])  # not -15: the signal was handled
    assert done.stdout.strip() == "Terminated"
    (run_dir,) = (tmp_path / "runs").iterdir()
    run_id = run_dir.name
    assert f"interrupted (SIGTERM): run {run_id} is marked KILLED; the checkpoint of epoch 1 is kept at " \
           f"{run_dir / 'checkpoint.pt'}" in done.stderr, done.stderr[-3000:]
    assert f"--resume-run-id {run_id}" in done.stderr
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "KILLED"
