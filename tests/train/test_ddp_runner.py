"""The real tracked run (``ecgml pretrain`` / ``finetune``, i.e. ``run_training``) under torchrun with two
gloo processes, end to end: pretraining, then fine-tuning with every strategy from the registered
backbone. The work rank 0 does alone (building the cache, opening the run, the end-of-run tracking wait)
is made longer than the collective timeout: the other rank must wait for it, not abort, and rank 0's
own message (the run's summary, or the outage message) must still print."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ecgml.config import STRATEGIES
from ecgml.data.synth import generate_g12ec, generate_ptbxl
from tests.commands import run_ecgml
from tests.mlflow_store import seeded_sqlite_uri
from tests.train.ddp_launch import RUN_WORKER, run_one_machine

ARGS = ["--epochs", "1", "--batch-size", "16", "--backbone", "xresnet1d18", "--backbone-kwargs",
        '{"width": 0.25, "layers": [1, 1]}', "--seed", "3", "--device", "cpu"]
#: A collective timeout shorter than each injected delay of rank 0's solo work.
SLOW = {"ECGML_DIST_TIMEOUT_S": "3", "DDP_SOLO_DELAY_S": "5"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp-run")
    generate_ptbxl(root / "data" / "synthetic" / "ptbxl", 120, seed=0, sampling_rates=(100,), workers=1,
                   progress=False)
    generate_g12ec(root / "data" / "synthetic" / "g12ec", 120, seed=1, workers=1, progress=False)
    return root


def _env(workdir: Path, reports: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    reports.mkdir(parents=True, exist_ok=True)
    return {"MLFLOW_TRACKING_URI": seeded_sqlite_uri(workdir / "mlflow.db"), "ECGML_DATA": str(workdir / "data"),
            "PYTHONWARNINGS": "ignore", "DDP_REPORT_DIR": str(reports), **(extra or {})}


def _torchrun(workdir: Path, reports: Path, args: list[str],
              extra: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    done = run_one_machine(["cli", *args], env=_env(workdir, reports, extra), script=RUN_WORKER, cwd=workdir)
    ranks = [json.loads(path.read_text()) for path in sorted(reports.glob("rank*.json"))]
    return done, ranks


def _run(workdir: Path, stdout: str) -> Any:
    import mlflow

    match = re.search(r"^run (\w+): best epoch", stdout, re.MULTILINE)
    assert match, stdout[-2000:]
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}").get_run(match.group(1))


@pytest.fixture(scope="module")
def pretrained(workdir: Path) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """One two-rank pretraining (with rank 0's solo work slow), its model registered as ``bb``."""
    done, ranks = _torchrun(workdir, workdir / "reports-pre", ["pretrain", "--task", "superdiagnostic", *ARGS],
                            SLOW)
    if done.returncode == 0:
        register = run_ecgml(["register", "--name", "bb"], cwd=workdir,
                             env=_env(workdir, workdir / "reports-register"), timeout=120)
        assert register.returncode == 0, register.stderr[-2000:]
    return done, ranks


def _no_timeout(done: subprocess.CompletedProcess[str]) -> None:
    assert "Timed out" not in done.stderr and "timed out" not in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
def test_pretrain_on_two_ranks_waits_for_rank_0_alone(workdir: Path, pretrained: tuple) -> None:
    done, ranks = pretrained
    assert done.returncode == 0, done.stderr[-3000:]
    _no_timeout(done)
    # every piece of rank 0's solo work took longer than the collective timeout, and rank 1 waited for it
    assert [r["delayed"] for r in ranks] == [["cache", "open", "end"], []]
    assert [r.get("exit") or 0 for r in ranks] == [0, 0]
    run = _run(workdir, done.stdout)
    assert run.info.status == "FINISHED"
    assert {k: run.data.params[k] for k in ("train_device", "precision", "world_size")} == {
        "train_device": "cpu", "precision": "fp32", "world_size": "2"}
    assert "test_macro_auc" in run.data.metrics and run.data.tags["ecgml.kind"] == "pretrain"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_finetune_on_two_ranks_with_each_strategy(workdir: Path, pretrained: tuple, strategy: str) -> None:
    assert pretrained[0].returncode == 0, "the shared pretraining failed (see its own test)"
    done, ranks = _torchrun(workdir, workdir / f"reports-{strategy}",
                            ["finetune", *ARGS, "--backbone-uri", "models:/bb/1", "--strategy", strategy,
                             "--fraction", "0.5", "--register-as", f"clf-{strategy}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r.get("exit") or 0 for r in ranks] == [0, 0]
    assert ranks[0]["downloads"] >= 1 and ranks[1]["downloads"] == 0  # rank 1 got the backbone from rank 0
    run = _run(workdir, done.stdout)
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy"] == strategy and run.data.params["world_size"] == "2"
    assert run.data.tags["ecgml.backbone_version"] == "models:/bb/1"
    assert run.data.tags["ecgml.registered_as"] == f"models:/clf-{strategy}/1"


@pytest.mark.slow
def test_rank_0_outage_message_prints_while_rank_1_waits(workdir: Path, pretrained: tuple) -> None:
    """The tracking server is gone at the end for longer than the collective timeout: rank 1 waits, learns
    that rank 0 failed and says so in one line; rank 0 prints the outage message with the resume command."""
    done, ranks = _torchrun(workdir, workdir / "reports-outage", ["pretrain", "--task", "superdiagnostic", *ARGS],
                            {**SLOW, "DDP_TRACKING_DOWN": "1"})
    assert done.returncode != 0
    _no_timeout(done)
    assert "is unreachable (connection refused (the test's injected outage))" in done.stderr, done.stderr[-3000:]
    assert re.search(r"finish the same run .*\n\s+ecgml pretrain .*--resume-run-id \w+", done.stderr)
    assert "ecgml rank 1: stopping: rank 0 failed (TrackingUnavailable: tracking server" in done.stderr
    assert [r["delayed"] for r in ranks] == [["open", "end"], []]  # the cache was built: no delay there
    assert [r.get("exit") or 0 for r in ranks] == [1, 0]  # only the failed rank fails: torchrun names it
