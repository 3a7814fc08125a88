"""The tracking server stops during training: training goes on with its local checkpoints, the run fails
with a message naming the server, what was not logged, the checkpoint and the exact resume command; once
the server is back on the same store, that command finishes the same run, no epoch lost or logged twice."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ecgml.data.synth import generate_ptbxl
from ecgml.train.runner import resume_command
from tests.commands import run_ecgml
from tests.faults.mlflow_server import MlflowServer

ARGS = ["pretrain", "--task", "superdiagnostic", "--epochs", "5", "--batch-size", "16", "--backbone", "xresnet1d18",
        "--backbone-kwargs", '{"width": 0.25, "layers": [1, 1]}', "--seed", "3", "--experiment", "outage"]


#: Variables that tie a process to one experiment or run (other tests may leave them in os.environ).
_RUN_SCOPED = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("outage")
    generate_ptbxl(root / "data" / "synthetic" / "ptbxl", 240, seed=0, sampling_rates=(100,), workers=1,
                   progress=False)
    return root


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[MlflowServer]:
    """One server for the module (each start costs seconds of imports); each test leaves it running."""
    srv = MlflowServer(workdir / "server")
    yield srv.start()
    srv.stop()


def _env(workdir: Path, uri: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k not in _RUN_SCOPED}
    return {**inherited, "MLFLOW_TRACKING_URI": uri, "ECGML_DATA": str(workdir / "data"), "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
            # fail fast inside MLflow's client, and wait only briefly for the server at the end
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "ECGML_TRACKING_WAIT_S": "2"}


def _history(uri: str, run_id: str, key: str = "val_macro_auc") -> list[tuple[int, float]]:
    query = urllib.parse.urlencode({"run_id": run_id, "metric_key": key})
    with urllib.request.urlopen(f"{uri}/api/2.0/mlflow/metrics/get-history?{query}", timeout=5) as response:
        return [(int(m["step"]), float(m["value"])) for m in json.load(response).get("metrics", [])]


def _first_epoch_logged(proc: subprocess.Popen, runs: Path, before: set[Path], uri: str
                        ) -> tuple[str | None, list[tuple[int, float]]]:
    """Wait (up to 240 s, while the job lives) until the new run's first epoch reached the server."""
    run_id: str | None = None
    held: list[tuple[int, float]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not held:
        fresh = set(runs.iterdir()) - before if runs.exists() else set()
        if fresh:
            run_id = next(iter(fresh)).name
            held = _history(uri, run_id)
        time.sleep(0.05)
    return run_id, held


@pytest.mark.slow
def test_server_stopped_mid_training_then_resumed(workdir: Path, server: MlflowServer) -> None:
    runs = workdir / "data" / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    err_path = workdir / "outage.stderr"
    with open(err_path, "w") as err_file:  # a file, not a pipe: progress bars must never block the job
        proc = subprocess.Popen([sys.executable, "-m", "ecgml.cli", *ARGS], cwd=workdir,
                                env=_env(workdir, server.uri), stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        run_id, held = _first_epoch_logged(proc, runs, before, server.uri)
        assert held, "the first epoch was never logged"
        server.stop()  # as abrupt as a crash: SIGKILL to the server and its workers
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run_id is not None
    err = err_path.read_text()
    checkpoint = runs / run_id / "checkpoint.pt"

    # Training went on to the end with its checkpoints, and the failure says what the user needs.
    assert proc.returncode == 1, err[-3000:]
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 4 and [h["epoch"] for h in state["history"]] == [0, 1, 2, 3, 4]
    assert f"warning: tracking server {server.uri} is unreachable" in err and "Training continues" in err
    assert f"tracking server {server.uri} is unreachable" in err and "after waiting 2 s" in err
    unlogged = [e for e in range(5) if e not in {s for s, _ in held}]
    assert f"Not logged to run {run_id} (experiment 'outage'): the metrics of epochs" in err
    assert f"(MLflow steps {', '.join(map(str, unlogged))})" in err
    assert f"the checkpoint of epoch 5 is kept at {checkpoint}" in err
    command_line = next(line.strip() for line in err.splitlines() if line.strip().startswith("ecgml pretrain"))
    assert command_line == resume_command("pretrain", run_id, ["ecgml", *ARGS])
    assert command_line.endswith(f"--resume-run-id {run_id}") and "--task superdiagnostic" in command_line
    assert "Traceback" not in err

    # The server comes back on the same store: the printed command finishes the same run.
    mtime = checkpoint.stat().st_mtime_ns
    server.start()
    assert _history(server.uri, run_id) == held  # nothing already logged was lost
    command = shlex.split(command_line)
    resumed = run_ecgml(command[1:], cwd=workdir, env=_env(workdir, server.uri), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"\nrun {run_id}: best epoch" in "\n" + resumed.stdout
    assert checkpoint.stat().st_mtime_ns == mtime  # nothing was retrained

    import mlflow

    client = mlflow.MlflowClient(server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("val_macro_auc", "train_loss", "val_loss"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == [0, 1, 2, 3, 4], (key, steps)  # no epoch lost, none logged twice
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "val_macro_auc")}
    for record in state["history"]:
        assert logged[record["epoch"]] == pytest.approx(record["val_macro_auc"], rel=1e-6)
    assert "test_macro_auc" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run_id)} >= {"weights", "eval", "config.json"}


@pytest.mark.slow
def test_a_short_outage_is_ridden_out(workdir: Path, server: MlflowServer) -> None:
    """Stopped after the first epoch and back a few seconds later: the queued epochs are sent once it
    answers, and the run ends normally, with every epoch exactly once."""
    runs = workdir / "data" / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    err_path = workdir / "short.stderr"
    env = {**_env(workdir, server.uri), "ECGML_TRACKING_WAIT_S": "120"}
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", "ecgml.cli", *ARGS, "--seed", "4"], cwd=workdir, env=env,
                                stdout=subprocess.PIPE, stderr=err_file, text=True)
    try:
        run_id, held = _first_epoch_logged(proc, runs, before, server.uri)
        assert held and run_id is not None
        server.stop()
        server.start()  # the job keeps training meanwhile, then waits for the server
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err_path.read_text()
    assert proc.returncode == 0, err[-3000:]
    assert f"run {run_id}: best epoch" in out
    assert f"warning: tracking server {server.uri} is unreachable" in err
    assert f"warning: tracking server {server.uri} answers again" in err

    import mlflow

    client = mlflow.MlflowClient(server.uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_macro_auc")) == [0, 1, 2, 3, 4]


def test_resume_command_replaces_any_resume_option() -> None:
    argv = ["/x/ecgml", "finetune", "--fraction", "0.5", "--resume", "--backbone-kwargs", '{"width": 0.5}']
    assert resume_command("finetune", "abc", argv) == (
        "ecgml finetune --fraction 0.5 --backbone-kwargs '{\"width\": 0.5}' --resume-run-id abc")
    assert resume_command("standalone", "abc", ["ecgml", "train-standalone", "--resume-run-id", "old", "--seed", "1"]
                          ) == "ecgml train-standalone --seed 1 --resume-run-id abc"
    assert resume_command("pretrain", "abc", ["ecgml", "pretrain", "--resume-run-id=old"]) == (
        "ecgml pretrain --resume-run-id abc")
    # called from another program (a tuning study): a template, never a wrong command
    assert resume_command("pretrain", "abc", ["ecgml", "tune"]) == (
        "ecgml pretrain <the same options as before> --resume-run-id abc")
