"""Where the MLflow UI opens: every experiment ecgml logs into is marked as model development (MLflow 3
otherwise opens it on the GenAI overview), and a job's last lines link to its experiment's runs table and to
the version it registered. Checked on SQLite and on a real ``mlflow server`` over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ecgml.tracking.runs import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, open_run, produced_text
from tests.faults.mlflow_server import MlflowServer
from tests.pretrained.conftest import export_tiny
from tests.tracking.test_mlflow_run import use_store


@pytest.fixture(params=["sqlite", "http"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)  # a logged model's artifacts land under ./mlruns with SQLite
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        use_store(monkeypatch, uri)
        yield uri
        return
    server = MlflowServer(tmp_path / "server").start()
    try:
        use_store(monkeypatch, server.uri)
        yield server.uri
    finally:
        server.stop()


def _kind(uri: str, name: str) -> str | None:
    import mlflow

    return (mlflow.MlflowClient(uri).get_experiment_by_name(name).tags or {}).get(EXPERIMENT_KIND_TAG)


def test_every_experiment_ecgml_creates_is_model_development(store: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    import ecgml.pretrained.shipped as shipped
    from ecgml.cli import main
    from ecgml.defaults import PRETRAINED_EXPERIMENT
    from ecgml.tracking.mlflow_project import ProjectExperimentProvider
    from ecgml.tune.logger import start_parent_run

    with open_run("ecgml-finetune", system_metrics=False):  # every training, calibration, evaluation, main
        pass
    with open_run("a user's own", system_metrics=False):
        pass
    start_parent_run("ecgml-tune", "study-1", {}, {}, {})  # a tuning study's parent run
    provider = ProjectExperimentProvider()
    provider._step = "calibrate"  # what in_context found for `mlflow run . -e calibrate`
    provider.get_experiment_id()
    export_tiny(tmp_path)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "shipped")
    names = ["ecgml-finetune", "a user's own", "ecgml-tune", "ecgml-calibrate"]
    if not store.startswith("http"):  # registering a run-less logged model over HTTP is issue 23's
        done = CliRunner().invoke(main, ["pretrained", "register", "tiny-superdiagnostic"])
        assert done.exit_code == 0, done.output
        assert "version:    http://127.0.0.1:5000/#/models/ecgml-ptbxl-backbone/versions/1" in done.output
        names.append(PRETRAINED_EXPERIMENT)
    for name in names:
        assert _kind(store, name) == EXPERIMENT_KIND, name

    # A kind the user chose is theirs.
    client = mlflow.MlflowClient(store)
    client.create_experiment("genai work", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    with open_run("genai work", system_metrics=False):
        pass
    assert _kind(store, "genai work") == "genai_development"


def test_a_jobs_last_lines_link_to_its_experiments_runs_and_its_version(store: str) -> None:
    with open_run("ecgml-finetune", run_name="finetune it", system_metrics=False) as run:
        pass
    experiment = run.info.experiment_id
    text = produced_text(run.info.run_id, "models:/ecgml-g12ec-classifier/3")
    base = store if store.startswith("http") else "http://127.0.0.1:5000"
    lines = dict(line.split(":", 1) for line in text.splitlines())
    assert lines["runs"].strip() == f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning"
    assert lines["version"].strip() == f"{base}/#/models/ecgml-g12ec-classifier/versions/3"
    assert lines["open"].strip().startswith(f"{base}/#/experiments/{experiment}/runs/{run.info.run_id}")
    if not store.startswith("http"):  # a local store: how to start the UI on it
        assert f"`mlflow ui --backend-store-uri {store}`" in lines["open"]
    assert "version" not in dict(line.split(":", 1) for line in produced_text(run.info.run_id).splitlines())
