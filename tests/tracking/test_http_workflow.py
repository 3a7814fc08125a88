"""The registry workflow as a team runs it: every command against one real ``mlflow server`` over HTTP, with
the artifact proxy (``--artifacts-destination``), and once more behind basic auth.

pretrain -> register -> promote -> fine-tune by version -> calibrate -> evaluate -> predict,
``pretrained register`` of a shipped backbone, ``tune`` registering its best trial and a two-rank torchrun
fine-tune: each registration sends a ``models:/m-...`` source, which the
server accepts only with the logged model's ID beside it (the SQLite store never checks that).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecgml.data.synth import generate_g12ec, generate_ptbxl
from tests.commands import run_ecgml
from tests.faults.mlflow_server import AUTH_ADMIN, MlflowServer, start_auth_server, start_server

ARGS = ["--epochs", "1", "--batch-size", "16", "--backbone", "xresnet1d18", "--backbone-kwargs",
        '{"width": 0.25, "layers": [1, 1]}', "--seed", "5"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic PTB-XL and G12EC trees (ECGML_DATA of every command here)."""
    root = tmp_path_factory.mktemp("http-data")
    generate_ptbxl(root / "synthetic" / "ptbxl", 160, seed=0, sampling_rates=(100,), workers=1, progress=False)
    generate_g12ec(root / "synthetic" / "g12ec", 160, seed=1, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = start_server(tmp_path_factory.mktemp("http-server"))
    yield started
    started.stop()


def _env(uri: str, data: Path, credentials: tuple[str, str] | None = None) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_EXPERIMENT_"))
                 and k != "MLFLOW_RUN_ID"}
    env = {**inherited, "MLFLOW_TRACKING_URI": uri, "ECGML_DATA": str(data), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    if credentials:
        env.update(MLFLOW_TRACKING_USERNAME=credentials[0], MLFLOW_TRACKING_PASSWORD=credentials[1])
    return env


def _ecgml(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_ecgml(args, cwd=cwd, env=env, timeout=400)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.args, done.stderr[-3000:])
    assert "Traceback" not in done.stderr
    return done.stdout


def _predict(cwd: Path, env: dict[str, str], uri: str, records: Path) -> list[dict[str, str]]:
    out = cwd / f"predictions-{uri.rsplit('/', 1)[-1].replace('@', '-')}.csv"
    _ok(_ecgml(cwd, env, "predict", "--model", uri, "--out", str(out), "--no-progress", str(records)))
    with open(out, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_whole_workflow_over_http(server: MlflowServer, trees: Path, tmp_path: Path) -> None:
    import mlflow

    env = _env(server.uri, trees)
    _ok(_ecgml(tmp_path, env, "pretrain", "--task", "superdiagnostic", *ARGS))
    assert "registered bb version 1" in _ok(_ecgml(tmp_path, env, "register", "--experiment", "ecgml-pretrain",
                                                   "--name", "bb"))
    _ok(_ecgml(tmp_path, env, "registry", "promote", "bb", "1", "--stage", "production"))
    _ok(_ecgml(tmp_path, env, "finetune", *ARGS, "--backbone-uri", "models:/bb/1", "--register-as", "clf"))
    assert "registered models:/clf/2" in _ok(_ecgml(tmp_path, env, "calibrate", "--model", "models:/clf/1"))
    _ok(_ecgml(tmp_path, env, "registry", "promote", "clf", "2", "--stage", "production"))
    _ok(_ecgml(tmp_path, env, "evaluate", "--model", "models:/clf@production", "--bootstrap", "20"))
    rows = _predict(tmp_path, env, "models:/clf@production", trees / "synthetic" / "g12ec")
    assert rows and all(row["status"] == "ok" for row in rows[:5])

    shipped = _ok(_ecgml(tmp_path, env, "pretrained", "register", "ptbxl-superdiagnostic", "--alias", "production"))
    assert shipped.splitlines()[-1] == "models:/ecgml-ptbxl-backbone@production"

    client = mlflow.MlflowClient(server.uri)
    for name, version in (("bb", "1"), ("clf", "1"), ("clf", "2"), ("ecgml-ptbxl-backbone", "1")):
        source = client.get_model_version(name, version).source
        assert source.startswith("models:/m-") and client.get_logged_model(source.removeprefix("models:/"))
    assert client.get_model_version_by_alias("clf", "production").version == "2"
    assert client.get_model_version("clf", "1").tags["ecgml.backbone_version"] == "models:/bb/1"
    # the artifacts went through the proxy into the server's folder, not into this working directory
    assert not (tmp_path / "mlruns").exists() and any((server.folder / "artifacts").iterdir())


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MlflowServer, str]]:
    server, password = start_auth_server(tmp_path_factory.mktemp("http-auth"))
    yield server, password
    server.stop()


def test_tune_registers_its_best_trial_over_http(server: MlflowServer, trees: Path, tmp_path: Path) -> None:
    import mlflow

    env = _env(server.uri, trees)
    out = _ok(_ecgml(tmp_path, env, "tune", "--n-trials", "2", "--storage", str(tmp_path / "study.journal"),
                     "--study-name", "http", "--pruner", "none", "--sampler", "random", "--seed", "3",
                     "--task", "superdiagnostic", "--epochs", "1", "--backbone-kwargs", '{"layers": [1, 1]}',
                     "--space", "backbone=xresnet1d18", "--space", "width=0.25", "--space", "batch_size=16",
                     "--register-as", "tuned"))
    version = mlflow.MlflowClient(server.uri).get_model_version("tuned", "1")
    assert version.source.startswith("models:/m-") and "tuned" in out


def test_two_rank_finetune_over_http(server: MlflowServer, trees: Path, tmp_path: Path) -> None:
    """torchrun with two gloo ranks: rank 0 downloads the backbone through the proxy and registers."""
    import json

    import mlflow

    from tests.train.ddp_launch import RUN_WORKER, run_one_machine

    env = _env(server.uri, trees)
    client = mlflow.MlflowClient(server.uri)
    if not client.search_model_versions("name = 'bb'"):  # the workflow test registers it; alone, do it here
        _ok(_ecgml(tmp_path, env, "pretrain", "--task", "superdiagnostic", *ARGS))
        _ok(_ecgml(tmp_path, env, "register", "--experiment", "ecgml-pretrain", "--name", "bb"))
    reports = tmp_path / "reports"
    reports.mkdir()
    done = run_one_machine(["cli", "finetune", *ARGS, "--device", "cpu", "--backbone-uri", "models:/bb/1",
                            "--fraction", "0.5", "--register-as", "clf-ddp"],
                           env={**env, "DDP_REPORT_DIR": str(reports)}, script=RUN_WORKER, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads(path.read_text()) for path in sorted(reports.glob("rank*.json"))]
    assert [r.get("exit") or 0 for r in ranks] == [0, 0] and ranks[1]["downloads"] == 0
    version = client.get_model_version("clf-ddp", "1")
    assert client.get_run(version.run_id).data.params["world_size"] == "2"


# MLflow's basic-auth app needs the `auth` extra (Flask-WTF); the dev extra installs it.
@pytest.mark.skipif(importlib.util.find_spec("flask_wtf") is None,
                    reason="mlflow[auth] (Flask-WTF) is not installed: pip install -e '.[dev]'")
def test_registration_behind_basic_auth(auth_server: tuple[MlflowServer, str], trees: Path, tmp_path: Path) -> None:
    """A shipped backbone registered and fine-tuned from by alias, the classifier predicting, all with credentials."""
    server, password = auth_server
    env = _env(server.uri, trees, (AUTH_ADMIN, password))
    _ok(_ecgml(tmp_path, env, "pretrained", "register", "ptbxl-superdiagnostic", "--alias", "production"))
    _ok(_ecgml(tmp_path, env, "finetune", "--epochs", "1", "--batch-size", "16", "--seed", "5", "--fraction", "0.25",
               "--backbone-uri", "models:/ecgml-ptbxl-backbone@production", "--register-as", "clf"))
    rows = _predict(tmp_path, env, "models:/clf/1", trees / "synthetic" / "g12ec")
    assert rows and rows[0]["status"] == "ok"
