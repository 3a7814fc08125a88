"""`ecgml tune` end to end on a tiny synthetic PTB-XL tree: two worker processes on a journal file and on a real
PostgreSQL server (which is also the MLflow backend store there), one of them killed with -9 mid-trial; a resumed
study; bad input refused before any trial starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ecgml.cli.tune import tune_command
from ecgml.data.synth import generate_ptbxl
from ecgml.tune import logger
from ecgml.tune.study import slots_used
from tests.mlflow_store import seeded_sqlite_uri
from tests.servers import PostgresServer, free_port, postgres_server

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

BASE = ["--task", "superdiagnostic", "--epochs", "3", "--backbone-kwargs", '{"layers": [1, 1]}', "--sampler", "random",
        "--seed", "3", "--heartbeat-interval", "1"]
TINY = ["--space", "backbone=xresnet1d18", "--space", "crop_s=2.5", "--space", "batch_size=16"]
ARGS = [*BASE, *TINY, "--space", "width=0.125,0.25"]
RUN = [sys.executable, "-c", "from ecgml.cli.tune import tune_command; tune_command()"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune")
    generate_ptbxl(root / "data" / "synthetic" / "ptbxl", 200, seed=0, sampling_rates=(100,), workers=1,
                   progress=False)
    return root


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


def _env(workdir: Path, tracking: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    return {**env, "MLFLOW_TRACKING_URI": tracking, "ECGML_DATA": str(workdir / "data"), "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore"}


def _study(storage: str, name: str) -> Any:
    import optuna

    from ecgml.tune.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat_interval=1))


def _children(tracking: str, parent_run_id: str) -> dict[int, list[Any]]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], max_results=1000,
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    out: dict[int, list[Any]] = {}
    for run in runs:
        out.setdefault(int(run.data.tags[logger.NUMBER_TAG]), []).append(run)
    return out


def _wait_for_running_trial(storage: str, name: str, proc: subprocess.Popen[str], timeout: float = 240) -> Any:
    """A trial that is RUNNING, has a worker other than ``proc`` (the launcher, worker 0, which also writes
    the study's summary) and has reported at least one epoch (so its run exists)."""
    from optuna.trial import TrialState

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            running = _study(storage, name).get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # not created yet
            running = []
        for trial in running:
            worker = trial.user_attrs.get("worker", "")
            if trial.intermediate_values and worker and not worker.endswith(f":{proc.pid}"):
                return trial
        time.sleep(0.2)
    out = proc.communicate()[0] if proc.poll() is not None else ""
    raise AssertionError(f"no trial reached its first epoch while running:\n{out[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_two_workers_one_killed_mid_trial(kind: str, workdir: Path, request: pytest.FixtureRequest) -> None:
    """Exactly the requested trials complete, none lost or run twice; the killed trial is failed by heartbeat,
    retried with its parameters, and its orphaned run closed; every trial has one nested run in a final state."""
    import mlflow
    from optuna.trial import TrialState

    if kind == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg")
        storage, tracking = server.create_database("optuna"), server.create_database("mlflow")
    else:
        storage, tracking = str(workdir / "kill.journal"), seeded_sqlite_uri(workdir / "kill.db")
    name = f"killed-{kind}"
    args = [*RUN, "--workers", "2", "--n-trials", "4", "--study-name", name, "--storage", storage,
            "--pruner", "none", "--grace-period", "10", "--tag", "suite=tune", *ARGS]
    proc = subprocess.Popen(args, cwd=workdir, env=_env(workdir, tracking), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        victim = _wait_for_running_trial(storage, name, proc)
        os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        out = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    assert "exited with status -9" in out

    trials = _study(storage, name).get_trials()
    states = [t.state for t in trials]
    why = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.FAIL) == 1 and len(trials) == 5, (
        why, out[-6000:])
    assert trials[victim.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert slots_used(trials) == 4 and sorted(t.number for t in trials) == list(range(5))

    spec_parent = _study(storage, name).user_attrs["mlflow_parent_run_id"]
    children = _children(tracking, spec_parent)
    assert sorted(children) == list(range(5)) and all(len(runs) == 1 for runs in children.values())
    for number, (run,) in children.items():
        assert run.info.status in ("FINISHED", "FAILED"), (number, run.info.status)
        assert run.data.tags["suite"] == "tune" and run.data.tags[logger.STUDY_TAG] == name
        assert trials[number].user_attrs.get(logger.RUN_ID_ATTR, run.info.run_id) == run.info.run_id
    (dead,) = children[victim.number]
    assert dead.info.status == "FAILED" and dead.data.tags[logger.STATE_TAG] == "FAIL"
    assert "stopped sending heartbeats" in dead.data.tags[logger.REASON_TAG]
    assert children[retry.number][0].data.tags[logger.RETRY_TAG] == str(victim.number)

    client = mlflow.MlflowClient(tracking_uri=tracking)
    parent = client.get_run(spec_parent)
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_complete"] == 4
    inputs = {(i.dataset.name, i.dataset.digest) for i in parent.inputs.dataset_inputs}
    assert len(inputs) == 3  # logged before the trials, which then reference the same datasets
    for number, (run,) in children.items():
        if number != victim.number:
            assert {(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs} == inputs
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert parent.data.tags["optuna.best_trial_run_id"] == children[best.number][0].info.run_id
    registered = parent.data.tags["ecgml.registered_as"]
    version = client.get_model_version("ecgml-ptbxl-backbone", registered.rsplit("/", 1)[1])
    assert version.run_id == children[best.number][0].info.run_id


@pytest.mark.slow
def test_resumed_study_continues_counting(workdir: Path) -> None:
    import mlflow
    from optuna.trial import TrialState

    storage, tracking = str(workdir / "resume.journal"), seeded_sqlite_uri(workdir / "resume.db")
    env = _env(workdir, tracking)
    runner = CliRunner()
    first = runner.invoke(tune_command, ["--n-trials", "2", "--study-name", "grow", "--storage", storage,
                                         "--no-register", *ARGS], env=env, catch_exceptions=False)
    assert first.exit_code == 0, first.output[-3000:]
    assert "registered models:/" not in first.output
    second = runner.invoke(tune_command, ["--resume", "--n-trials", "3", "--storage", storage, "--heartbeat-interval",
                                          "1", "--register-as", "grown"], env=env, catch_exceptions=False)
    assert second.exit_code == 0, second.output[-3000:]
    assert "resuming study 'grow': 2 of 3 trials finished" in second.output
    assert "registered models:/grown/1" in second.output

    study = _study(storage, "grow")
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    children = _children(tracking, parent_id)
    assert sorted(children) == [0, 1, 2]
    assert mlflow.MlflowClient(tracking_uri=tracking).get_run(parent_id).info.status == "FINISHED"


def test_bad_input_fails_before_any_trial(workdir: Path) -> None:
    runner = CliRunner()
    journal = workdir / "bad.journal"
    env = _env(workdir, f"sqlite:///{workdir / 'bad.db'}")
    cases = [
        ([*TINY, "--storage", f"postgresql://u:pw@127.0.0.1:{free_port()}/optuna"], {}, "cannot be used"),
        ([*TINY, "--storage", str(journal)], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, "is unreachable"),
        ([*TINY, "--storage", str(journal), "--workers", "2"], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
         "is unreachable"),  # worker 1, started before the set-up, is stopped
        ([*TINY, "--storage", str(journal), "--space", "width=0.25", "--space", "lr=1e-3", "--space",
          "weight_decay=0", "--space", "dropout=0.1", "--space", "aggregate=max"], {}, "the search space is empty"),
        ([*TINY, "--storage", str(journal), "--space", "lr=1e-2:1e-3"], {}, "lr: range low 0.01 > high 0.001"),
        (["--storage", str(journal), "--resume", "--study-name", "nope"], {}, "nothing to resume"),
    ]
    for args, extra_env, message in cases:
        result = runner.invoke(tune_command, [*BASE, *args], env={**env, **extra_env})
        assert result.exit_code == 1 and message in result.output, (args, result.output[-2000:])
        assert "trial 0 started" not in result.output
    assert not (workdir / "bad.db").exists() or _no_runs(f"sqlite:///{workdir / 'bad.db'}")
    assert not journal.exists() or _study_names(str(journal)) == []


def _no_runs(tracking: str) -> bool:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking)
    return not client.search_runs([e.experiment_id for e in client.search_experiments()])


def _study_names(storage: str) -> list[str]:
    from ecgml.tune.storage import open_storage

    return [s.study_name for s in open_storage(storage, heartbeat_interval=1).get_all_studies()]
