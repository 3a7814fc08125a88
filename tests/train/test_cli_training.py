"""`ecgml pretrain` / `train-standalone` end to end on tiny synthetic trees, and resumption after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecgml.data.synth import generate_g12ec, generate_ptbxl
from tests.commands import run_ecgml
from tests.mlflow_store import seeded_sqlite_uri

ARGS = ["--epochs", "4", "--batch-size", "16", "--backbone", "xresnet1d18", "--backbone-kwargs",
        '{"width": 0.25, "layers": [1, 1]}', "--seed", "3"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("work")
    generate_ptbxl(root / "data" / "synthetic" / "ptbxl", 240, seed=0, sampling_rates=(100,), workers=1, progress=False)
    generate_g12ec(root / "data" / "synthetic" / "g12ec", 200, seed=1, workers=1, progress=False)
    return root


def _env(workdir: Path, store: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": seeded_sqlite_uri(workdir / store),
            "ECGML_DATA": str(workdir / "data"), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _ecgml(workdir: Path, store: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return run_ecgml(args, cwd=workdir, env=_env(workdir, store), timeout=timeout)


def _run(store: Path, run_id: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    return client, client.get_run(run_id)


def _run_id(output: str) -> str:
    line = next(ln for ln in output.splitlines() if ln.startswith("run "))
    return line.split()[1].rstrip(":")


@pytest.mark.slow
def test_pretrain_and_standalone_log_everything(workdir: Path) -> None:
    done = _ecgml(workdir, "a.db", "pretrain", "--task", "superdiagnostic", *ARGS)
    assert done.returncode == 0, done.stderr[-3000:]
    client, run = _run(workdir / "a.db", _run_id(done.stdout))
    assert run.info.status == "FINISHED"
    assert {"dataset", "cache_digest", "git_commit", "task", "backbone", "ecgml.config_digest"} <= set(run.data.tags)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_auc")] == [0, 1, 2, 3]
    assert 0.5 < run.data.metrics["test_macro_auc"] <= 1.0
    assert 0 < run.data.metrics["test_macro_auprc"] <= 1.0 and 0 < run.data.metrics["test_fmax"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    expected = {"eval/predictions_test.csv", "eval/learning_curves.png", "eval/roc_test.png", "eval/auc_test.png"}
    assert expected <= artifacts
    config = json.loads(Path(client.download_artifacts(run.info.run_id, "config.json")).read_text())
    assert config["kind"] == "pretrain" and config["data"]["data"]["task"] == "superdiagnostic"
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {
        "ptbxl-superdiagnostic-train", "ptbxl-superdiagnostic-val", "ptbxl-superdiagnostic-test"}

    standalone = _ecgml(workdir, "a.db", "train-standalone", "--fraction", "0.5", *ARGS)
    assert standalone.returncode == 0, standalone.stderr[-3000:]
    _, run = _run(workdir / "a.db", _run_id(standalone.stdout))
    assert run.data.tags["dataset"] == "g12ec" and run.data.params["fraction"] == "0.5"


@pytest.mark.slow
def test_bad_options_fail_before_any_work(workdir: Path) -> None:
    for args, message in (
        (["pretrain", "--backbone", "resnet9000"], "unknown backbone 'resnet9000'"),
        (["pretrain", "--fraction", "1.5"], "fraction must be in (0, 1]"),
        (["pretrain", "--crop-s", "12"], "longer than the 10.0 s records"),
        (["train-standalone", "--task", "rhythm"], "G12EC is labelled on the shared classes only"),
    ):
        done = _ecgml(workdir, "bad.db", *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr[-2000:])
    env_args = ["pretrain", "--task", "superdiagnostic", *ARGS]
    done = run_ecgml(env_args, cwd=workdir, env={**_env(workdir, "x.db"), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
                     timeout=120)
    assert done.returncode == 1 and "is unreachable" in done.stderr


@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(workdir: Path) -> None:
    args = ["pretrain", "--task", "superdiagnostic", *ARGS, "--epochs", "6"]
    straight = _ecgml(workdir, "straight.db", *args)
    assert straight.returncode == 0, straight.stderr[-3000:]
    _, reference = _run(workdir / "straight.db", _run_id(straight.stdout))

    proc = subprocess.Popen([sys.executable, "-m", "ecgml.cli", *args], cwd=workdir, env=_env(workdir, "killed.db"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = workdir / "data" / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    deadline = time.time() + 240
    checkpoint = None
    while time.time() < deadline and proc.poll() is None:
        fresh = [p / "checkpoint.pt" for p in (set(runs.iterdir()) - before if runs.exists() else set())]
        if fresh and fresh[0].exists():
            import torch

            try:
                if torch.load(fresh[0], weights_only=True)["epoch"] >= 1:
                    checkpoint = fresh[0]
                    break
            except Exception:
                pass
        time.sleep(0.05)
    assert checkpoint is not None, "the run never checkpointed its second epoch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = checkpoint.parent.name
    client, killed = _run(workdir / "killed.db", run_id)
    assert killed.info.status == "RUNNING"  # kill -9 leaves no chance to close the run

    resumed = _ecgml(workdir, "killed.db", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _run_id(resumed.stdout) == run_id  # the same MLflow run
    client, run = _run(workdir / "killed.db", run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "val_macro_auc")]
    assert sorted(steps) == [0, 1, 2, 3, 4, 5]  # no epoch lost, none logged twice
    for key in ("val_macro_auc", "test_macro_auc", "train_loss"):
        assert run.data.metrics[key] == pytest.approx(reference.data.metrics[key], rel=1e-4, abs=1e-5), key


@pytest.mark.slow
def test_finetune_from_a_registered_backbone(workdir: Path) -> None:
    pre = _ecgml(workdir, "ft.db", "pretrain", "--task", "superdiagnostic", *ARGS, "--experiment", "ft-pre")
    assert pre.returncode == 0, pre.stderr[-3000:]
    assert _ecgml(workdir, "ft.db", "register", "--experiment", "ft-pre", "--name", "bb").returncode == 0
    # No production alias yet: the latest version is used, with a warning that says how to promote.
    tuned = _ecgml(workdir, "ft.db", "finetune", *ARGS, "--backbone-uri", "models:/bb@production",
                   "--strategy", "linear", "--fraction", "0.5", "--register-as", "clf")
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert "has no 'production' alias; using its latest version 1" in tuned.stderr
    client, run = _run(workdir / "ft.db", _run_id(tuned.stdout))
    assert run.data.tags["ecgml.backbone_version"] == "models:/bb/1"
    assert run.data.tags["ecgml.registered_as"] == "models:/clf/1"
    version = client.get_model_version("clf", "1")
    assert version.tags["ecgml.backbone_version"] == "models:/bb/1" and version.run_id == run.info.run_id
    metadata = json.loads(Path(client.download_artifacts(run.info.run_id, "weights/metadata.json")).read_text())
    assert metadata["num_classes"] == 18 and metadata["source"] == "g12ec" and metadata["backbone"] == "xresnet1d18"

    wrong = _ecgml(workdir, "ft.db", "finetune", *ARGS, "--backbone-uri", "models:/bb/1", "--fs", "50")
    assert wrong.returncode == 1 and "does not fit the target data: it was trained at 100 Hz" in wrong.stderr
    missing = _ecgml(workdir, "ft.db", "finetune", *ARGS, "--backbone-uri", "models:/bb/9")
    assert missing.returncode == 1 and "has no version 9" in missing.stderr
