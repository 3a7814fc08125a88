"""Registered classifier -> calibrate -> evaluate -> serve, on a tiny synthetic tree and a real scoring server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgml.data.labels import DEFAULT_LABEL_MAP, load_label_map
from ecgml.data.synth import generate_g12ec, generate_ptbxl
from ecgml.evaluate.calibration import sigmoid
from ecgml.posttrain.calibrate import CalibrationError, PredictionSet, calibrate_predictions, read_predictions
from ecgml.tracking.pyfunc import apply_temperatures
from tests.commands import run_ecgml
from tests.mlflow_store import seeded_sqlite_uri
from tests.servers import model_server, post_invocations

ARGS = ["--epochs", "3", "--batch-size", "16", "--backbone", "xresnet1d18", "--backbone-kwargs",
        '{"width": 0.25, "layers": [1, 1]}', "--seed", "5"]


def _env(root: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")}
    return {**inherited, "MLFLOW_TRACKING_URI": seeded_sqlite_uri(root / "mlflow.db"), "ECGML_DATA": str(root / "data"),
            "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # uvicorn


def _ecgml(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_ecgml(args, cwd=root, env=_env(root), timeout=400)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir whose store holds backbone bb/1 and fine-tuned classifier clf/1."""
    root = tmp_path_factory.mktemp("jobs")
    generate_ptbxl(root / "data" / "synthetic" / "ptbxl", 240, seed=0, sampling_rates=(100,), workers=1, progress=False)
    generate_g12ec(root / "data" / "synthetic" / "g12ec", 240, seed=1, workers=1, progress=False)
    for args in (["pretrain", "--task", "superdiagnostic", *ARGS],
                 ["register", "--experiment", "ecgml-pretrain", "--name", "bb"],
                 ["finetune", *ARGS, "--backbone-uri", "models:/bb/1", "--register-as", "clf"]):
        done = _ecgml(root, *args)
        assert done.returncode == 0, done.stderr[-3000:]
    return root


def _client(root: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def test_temperature_scaling_repairs_overconfidence() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(-1.0, 1.5, size=(3000, 4))
    labels = (rng.random(true_logits.shape) < sigmoid(true_logits)).astype(np.int8)
    over = sigmoid(3.0 * true_logits)  # three times too confident
    classes = ("A", "B", "C", "D")
    ids = tuple(str(i) for i in range(1500))
    val = PredictionSet(classes, ids, labels[:1500], over[:1500])
    test = PredictionSet(classes, ids, labels[1500:], over[1500:])
    result = calibrate_predictions(val, test, "single")
    assert result.temperatures["single"][0] == pytest.approx(3.0, rel=0.12)
    m = result.metrics()
    assert m["test_macro_ece_after"] < 0.5 * m["test_macro_ece_before"]
    assert m["test_macro_brier_after"] < m["test_macro_brier_before"]
    assert result.reports["test"]["after_per_class"]["macro_ece"] < m["test_macro_ece_before"]
    with pytest.raises(CalibrationError, match="unknown method"):
        calibrate_predictions(val, test, "isotonic")


def test_read_predictions_refuses_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    pd.DataFrame({"record_id": ["a"], "prob_X": [0.2]}).to_csv(path, index=False)
    with pytest.raises(CalibrationError, match=r"p\.csv: not an ecgml predictions file"):
        read_predictions(path)
    pd.DataFrame({"record_id": ["a"], "true_X": [1], "prob_X": [1.7]}).to_csv(path, index=False)
    with pytest.raises(CalibrationError, match="within"):
        read_predictions(path)


def _signal(fs: int = 500, seconds: float = 10.0) -> np.ndarray:
    t = np.arange(int(fs * seconds)) / fs
    return np.stack([np.sin(2 * np.pi * 1.2 * t + k) * (0.3 + 0.05 * k) for k in range(12)]).astype(np.float32)


def test_calibrate_registers_a_version_that_applies_its_temperatures(registered: Path) -> None:
    import mlflow

    done = _ecgml(registered, "calibrate", "--model", "models:/clf/1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered models:/clf/2" in done.stdout
    client = _client(registered)
    version = client.get_model_version("clf", "2")
    assert version.tags["ecgml.calibrated_from"] == "models:/clf/1"
    assert version.tags["ecgml.backbone_version"] == "models:/bb/1"  # lineage kept
    temperatures = np.array(json.loads(version.tags["ecgml.temperatures"]))
    run = client.get_run(version.run_id)
    assert run.data.tags["ecgml.kind"] == "calibrate"
    assert {"test_macro_ece_before", "test_macro_ece_after", "test_macro_brier_after"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(version.run_id, "calibration")} >= {
        "calibration/reliability_test.png", "calibration/calibration.json", "calibration/temperatures.npy"}

    mlflow.set_tracking_uri(f"sqlite:///{registered / 'mlflow.db'}")
    row = pd.DataFrame([{"signal": _signal().tolist(), "fs": 500}])
    raw = mlflow.pyfunc.load_model("models:/clf/1").predict(row).to_numpy()
    calibrated = mlflow.pyfunc.load_model("models:/clf/2").predict(row).to_numpy()
    np.testing.assert_allclose(calibrated, apply_temperatures(raw, temperatures), rtol=1e-3, atol=1e-6)

    again = _ecgml(registered, "calibrate", "--model", "models:/clf/2")
    assert again.returncode == 1 and "already calibrated" in again.stderr
    missing = _ecgml(registered, "calibrate", "--model", "runs:/0123456789abcdef0123456789abcdef")
    assert missing.returncode == 1 and "has no eval/predictions_val.csv" in missing.stderr
    runs = client.search_runs([client.get_experiment_by_name("ecgml-calibrate").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]  # refused requests left no run behind


def test_a_calibration_is_a_nested_child_of_the_run_it_calibrates(registered: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Under another active run (a sweep, the main run) the calibration still nests under its training run."""
    import mlflow

    from ecgml.posttrain.calibrate import calibrate_in_child
    from ecgml.tracking.runs import open_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{registered / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    client = _client(registered)
    trained = client.get_run(client.get_model_version("clf", "1").run_id)
    with open_run("elsewhere", run_name="outer", system_metrics=False) as outer:
        outcome = calibrate_in_child(f"runs:/{trained.info.run_id}", runs_dir=tmp_path, extra_tags={"probe": "1"})
        assert mlflow.active_run().info.run_id == outer.info.run_id  # the outer run is active again
    run = client.get_run(outcome.run_id)
    assert run.data.tags["mlflow.parentRunId"] == trained.info.run_id != outer.info.run_id
    assert run.info.experiment_id == trained.info.experiment_id  # the UI nests runs within one experiment
    assert run.info.status == "FINISHED" and run.info.run_name == f"calibrate {trained.info.run_name}"
    assert run.data.tags["probe"] == "1" and run.data.tags["ecgml.calibrated_run_id"] == trained.info.run_id
    assert "mlflow.user" in run.data.tags  # context tags, as a run started by mlflow.start_run has them
    assert {a.path for a in client.list_artifacts(run.info.run_id, "calibration")} >= {
        "calibration/calibration.json", "calibration/temperatures.npy"}


def test_evaluate_reproduces_the_training_runs_test_predictions(registered: Path) -> None:
    client = _client(registered)
    done = _ecgml(registered, "evaluate", "--model", "models:/clf/1", "--bootstrap", "50")
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.split()[1].rstrip(":")
    evaluated = client.get_run(run_id)
    trained = client.get_run(client.get_model_version("clf", "1").run_id)
    assert evaluated.data.tags["ecgml.evaluated_version"] == "models:/clf/1"
    # The served model (its own resampling, standardisation and windows) gives the training run's answers.
    ours = pd.read_csv(client.download_artifacts(run_id, "eval/predictions_test.csv"), dtype={"record_id": str})
    theirs = pd.read_csv(client.download_artifacts(trained.info.run_id, "eval/predictions_test.csv"),
                         dtype={"record_id": str})
    assert list(ours["record_id"]) == list(theirs["record_id"])
    probs = [c for c in theirs.columns if c.startswith("prob_")]
    np.testing.assert_allclose(ours[probs].to_numpy(), theirs[probs].to_numpy(), atol=2e-4)
    assert evaluated.data.metrics["test_macro_auc"] == pytest.approx(trained.data.metrics["test_macro_auc"], abs=1e-3)

    wrong = _ecgml(registered, "evaluate", "--model", "models:/bb/1")
    assert wrong.returncode == 1 and "predicts 5 classes" in wrong.stderr


@pytest.mark.slow
def test_mlflow_models_serve_answers_and_refuses_bad_requests(registered: Path) -> None:
    assert _ecgml(registered, "registry", "promote", "clf", "1", "--stage", "production").returncode == 0
    with model_server("models:/clf@production", registered, _env(registered), timeout_s=120) as port:
        ok_row = {"signal": _signal(500, 10.0).tolist(), "fs": 500}
        status, body = post_invocations(port, json.dumps({"dataframe_records": [ok_row]}).encode())
        assert status == 200, body
        prediction = body["predictions"][0]
        assert all(0 <= v <= 1 for v in prediction.values())
        assert set(prediction) == set(load_label_map(DEFAULT_LABEL_MAP).classes)  # the 18 shared classes, by name

        short = {"signal": _signal(500, 1.0).tolist(), "fs": 500}
        eleven = {"signal": _signal()[:11].tolist(), "fs": 500}
        nan = {"signal": _signal().tolist(), "fs": 500}
        nan["signal"][3][100] = float("nan")
        too_long = {"signal": np.zeros((12, 100 * 700), dtype=np.float32).tolist(), "fs": 100}
        for row, message in ((short, "shorter than the model's"), (eleven, "missing lead"),
                             (nan, "NaN"), (too_long, "longer than the 600 s accepted")):
            status, body = post_invocations(port, json.dumps({"dataframe_records": [row]}).encode())
            assert status == 400, (message, status)
            assert message in body["message"] and "Traceback" not in json.dumps(body), body["message"][-500:]
            assert "stack_trace" not in body
        status, body = post_invocations(port, b"{not json")
        assert 400 <= status < 500


@pytest.mark.slow
def test_mlflow_run_finetune_finds_the_registered_backbone_by_itself(registered: Path) -> None:
    """`mlflow run . -e finetune -P fraction=...` with the default store and backbone URI, as the README says."""
    assert _ecgml(registered, "register", "--experiment", "ecgml-pretrain").returncode == 0  # ecgml-ptbxl-backbone
    project = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(project), "-e", "finetune", "--env-manager", "local",
         "--experiment-name", "mlrun-finetune", "-P", "fraction=0.5", "-P", "epochs=2", "-P", "batch_size=16",
         "-P", "seed=5", "-P", "register_as=clf-mlrun"],
        cwd=registered, env=_env(registered), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "has no 'production' alias; using its latest version 1" in done.stderr  # found it by itself
    client = _client(registered)
    experiment = client.get_experiment_by_name("mlrun-finetune")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["fraction"] == "0.5"
    assert run.data.tags["ecgml.backbone_version"] == "models:/ecgml-ptbxl-backbone/1"
    assert run.data.tags["mlflow.project.entryPoint"] == "finetune"  # the run mlflow started, not a second one
    assert client.get_model_version("clf-mlrun", "1").run_id == run.info.run_id
