"""`mlflow run . -e finetune -P fraction=0.1` exactly as typed, after the README's set-up: MLflow builds the
python_env.yaml environment (no conda here), the run lands in ecgml-finetune under a descriptive name, the
job prints what it produced, and a launch whose environment cannot be built leaves no run RUNNING."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecgml.data.synth import generate_g12ec, generate_ptbxl
from ecgml.tracking.mlflow_project import (
    STEP_EXPERIMENTS,
    UNSTARTED_TAG,
    ProjectExperimentProvider,
    fail_unfinished_launch,
    launcher_args,
    project_step,
)
from ecgml.tracking.project_env import LAUNCHER_VARIABLE, installed_mlflow
from tests.commands import run_ecgml
from tests.mlflow_store import seeded_sqlite_uri

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TINY = ["--epochs", "2", "--batch-size", "16", "--backbone", "xresnet1d18", "--backbone-kwargs",
        '{"width": 0.25, "layers": [1, 1]}']


def _checkout(dest: Path) -> Path:
    """The project's files as a fresh clone has them (tracked and not ignored), nothing built."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    for rel in listed:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def _shell_env(work: Path, path: str) -> dict[str, str]:
    """The README's shell: `source .venv/bin/activate` (its bin first on PATH), a store and data in `work`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLFLOW_") or k in ("MLFLOW_ENV_ROOT",)}
    env.update({"MLFLOW_TRACKING_URI": seeded_sqlite_uri(work / "mlflow.db"), "ECGML_DATA": str(work / "data"),
                "VIRTUAL_ENV": str(VENV_BIN.parent), "PATH": path, "PYTHONWARNINGS": "ignore"})
    return env


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding a tiny registered ecgml-ptbxl-backbone, and tiny synthetic trees."""
    work = tmp_path_factory.mktemp("mlrun")
    generate_ptbxl(work / "data" / "synthetic" / "ptbxl", 200, seed=0, sampling_rates=(100,), workers=1,
                   progress=False)
    generate_g12ec(work / "data" / "synthetic" / "g12ec", 240, seed=1, workers=1, progress=False)
    env = _shell_env(work, f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for args in (["pretrain", "--task", "superdiagnostic", *TINY], ["register"]):
        done = run_ecgml(args, cwd=work, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    return work


def use_store(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    """Point MLflow's default client at ``uri`` as a fresh ``mlflow run`` process finds it: from
    ``MLFLOW_TRACKING_URI`` (an earlier test's ``mlflow.set_tracking_uri`` would otherwise win)."""
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)


def _runs(work: Path, experiment: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_only_ecgml_projects_get_a_step_experiment(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text("name: other\n")
    assert project_step({"uri": str(tmp_path), "entry_point": "finetune"}) is None
    assert project_step({"uri": str(ROOT), "entry_point": "finetune"}) == "finetune"
    assert project_step({"uri": str(ROOT), "entry_point": "finetune", "experiment_name": "mine"}) is None
    assert project_step({"uri": str(ROOT), "entry_point": "nothing"}) is None
    import yaml

    assert set(yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]) == set(STEP_EXPERIMENTS)


def test_the_launchers_own_unfinished_run_is_failed_and_no_other(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.projects.utils import _get_user

    use_store(monkeypatch, f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("ecgml-finetune")
    since = int(time.time() * 1000)
    user = {"mlflow.user": _get_user()}
    ours = client.create_run(experiment, tags={"mlflow.project.entryPoint": "finetune", **user})
    other_step = client.create_run(experiment, tags={"mlflow.project.entryPoint": "pretrain", **user})
    later = client.create_run(experiment, tags={"mlflow.project.entryPoint": "finetune", **user})
    done = client.create_run(experiment, tags={"mlflow.project.entryPoint": "finetune", **user})
    client.set_terminated(done.info.run_id)
    assert fail_unfinished_launch(experiment, "finetune", since) == ours.info.run_id
    assert client.get_run(ours.info.run_id).info.status == "FAILED"
    assert UNSTARTED_TAG in client.get_run(ours.info.run_id).data.tags
    for run in (other_step, later):
        assert client.get_run(run.info.run_id).info.status == "RUNNING"
    assert client.get_run(done.info.run_id).info.status == "FINISHED"


def test_only_the_mlflow_run_process_checks_its_run_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert launcher_args(["/venv/bin/mlflow", "run", ".", "-e", "finetune"]) == [".", "-e", "finetune"]
    assert launcher_args(["/venv/lib/site-packages/mlflow/__main__.py", "run", "."]) == ["."]
    for argv in (["/venv/bin/mlflow", "models", "serve"], ["/venv/bin/pytest", "run"], ["/venv/bin/mlflow"],
                 ["/x/ecgml/__main__.py", "run"]):
        assert launcher_args(argv) is None, argv
    registered: list[tuple] = []
    monkeypatch.setattr("atexit.register", lambda *a: registered.append(a))
    monkeypatch.setenv(LAUNCHER_VARIABLE, "unset")  # restored at teardown whatever the provider writes
    monkeypatch.setattr(sys, "argv", ["/venv/bin/pytest", "-q"])
    ProjectExperimentProvider()
    assert registered == []  # MLflow constructs the provider in every process that imports it
    assert os.environ[LAUNCHER_VARIABLE] == "unset"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/mlflow", "run", ".", "--experiment-name", "mine"])
    provider = ProjectExperimentProvider()
    assert [r[:3] for r in registered] == [(provider.at_launcher_exit, [".", "--experiment-name", "mine"],
                                            os.getcwd())]
    assert os.environ[LAUNCHER_VARIABLE] == installed_mlflow()  # what its entry point compares with its own


@pytest.mark.parametrize("chosen", ["--experiment-name", "--experiment-id", "MLFLOW_EXPERIMENT_NAME",
                                    "MLFLOW_EXPERIMENT_ID", "step"])
def test_the_exit_check_finds_the_launch_whichever_way_the_experiment_was_chosen(
        chosen: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.projects.utils import _get_user

    use_store(monkeypatch, f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    client = mlflow.MlflowClient()
    name = "ecgml-finetune" if chosen == "step" else "mine"
    experiment = client.create_experiment(name)
    args = [".", "-e", "finetune", "-P", "fraction=0.1"]
    if chosen.startswith("--"):
        args += [chosen, name if chosen == "--experiment-name" else experiment]
    elif chosen != "step":
        monkeypatch.setenv(chosen, name if chosen.endswith("NAME") else experiment)
    since = int(time.time() * 1000)
    run = client.create_run(experiment, tags={"mlflow.project.entryPoint": "finetune", "mlflow.user": _get_user()})
    provider = ProjectExperimentProvider()
    assert provider.at_launcher_exit([*args, "--backend", "kubernetes"], str(ROOT), since) is None  # may run on
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    assert provider.at_launcher_exit(args, str(tmp_path), since) is None  # not an ecgml project
    assert provider.at_launcher_exit(args, str(ROOT), since) == run.info.run_id
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    assert UNSTARTED_TAG in client.get_run(run.info.run_id).data.tags


@pytest.mark.slow
@pytest.mark.parametrize("chosen", ["--experiment-name", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"])
def test_a_failed_launch_into_a_chosen_experiment_leaves_no_run_running(chosen: str, tmp_path: Path) -> None:
    """The launches MLflow never asks the plugin about: the experiment came from the command line or the
    environment."""
    import mlflow

    project = _checkout(tmp_path / "clone")
    no_pyenv = os.pathsep.join([str(VENV_BIN), "/usr/local/bin", "/usr/bin", "/bin"])  # MLflow needs pyenv
    env = {**_shell_env(tmp_path, no_pyenv), "MLFLOW_ENV_ROOT": str(tmp_path / "envs")}
    command = ["mlflow", "run", ".", "-e", "finetune", "-P", "fraction=0.1"]
    if chosen == "--experiment-name":
        command += ["--experiment-name", "mine"]
    elif chosen == "MLFLOW_EXPERIMENT_NAME":
        env[chosen] = "mine"
    else:
        env[chosen] = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("mine")
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    (run,) = _runs(tmp_path, "mine")
    assert run.info.status == "FAILED" and UNSTARTED_TAG in run.data.tags, done.stderr[-2000:]
    assert "never reached its entry point; marked FAILED" in done.stderr
    assert not _runs(tmp_path, "ecgml-finetune") and not _runs(tmp_path, "Default")


@pytest.mark.slow
def test_a_launch_whose_environment_cannot_be_built_leaves_no_run_running(work: Path, tmp_path: Path) -> None:
    project = _checkout(tmp_path / "clone")
    no_pyenv = os.pathsep.join([str(VENV_BIN), "/usr/local/bin", "/usr/bin", "/bin"])  # MLflow needs pyenv
    env = {**_shell_env(work, no_pyenv), "MLFLOW_ENV_ROOT": str(tmp_path / "envs")}
    done = subprocess.run(["mlflow", "run", ".", "-e", "finetune", "-P", "fraction=0.1"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    (run,) = [r for r in _runs(work, "ecgml-finetune") if UNSTARTED_TAG in r.data.tags]
    assert run.info.status == "FAILED" and not _runs(work, "Default")
    assert "never reached its entry point; marked FAILED" in done.stderr


@pytest.mark.slow
def test_mlflow_run_finetune_as_typed(work: Path, tmp_path: Path) -> None:
    project = _checkout(tmp_path / "clone")
    env = _shell_env(work, f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(["mlflow", "run", ".", "-e", "finetune", "-P", "fraction=0.1"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=1800)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "torch-2.13.0+cpu" in out or "torch==2.13.0" in out or "already exists" in out  # built, or reused
    assert "nvidia" not in out.lower(), "a CUDA build of torch was pulled"
    (run,) = [r for r in _runs(work, "ecgml-finetune") if UNSTARTED_TAG not in r.data.tags]
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.project.entryPoint"] == "finetune"
    assert run.data.tags["mlflow.project.env"] == "virtualenv"
    assert run.info.run_name == "finetune g12ec xresnet1d18 f=0.1 s=0"
    assert run.data.params["fraction"] == "0.1" and run.data.params["arm"] == "finetune"
    assert run.data.params["backbone_version"] == "models:/ecgml-ptbxl-backbone/1"
    assert not _runs(work, "Default")
    assert f"run:        finetune g12ec xresnet1d18 f=0.1 s=0 ({run.info.run_id}) in experiment ecgml-finetune" in out
    assert "registered: ecgml-g12ec-classifier version 1 (models:/ecgml-g12ec-classifier/1)" in out
    assert f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in out


@pytest.mark.slow
def test_a_backbone_that_cannot_fit_is_refused_before_any_cache_is_built(work: Path) -> None:
    cache = work / "data" / "cache"
    before = sorted(p.name for p in cache.iterdir())
    env = _shell_env(work, f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for args, said in ((["--fs", "500"], "trained at 100 Hz"), (["--leads", "6"], "--leads I,II,III")):
        done = run_ecgml(["finetune", *args], cwd=work, env=env, timeout=300)
        assert done.returncode != 0 and said in done.stderr, done.stderr[-2000:]
        assert "does not fit the target data" in done.stderr
    assert sorted(p.name for p in cache.iterdir()) == before
