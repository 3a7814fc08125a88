"""Linear probing and gradual unfreezing under two gloo processes: DDP must be built for the parameters
that train, and rebuilt when gradual unfreezing thaws more (else step 2 fails, or the ranks drift)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.prepare import prepare
from tests.data.trees import write_tiny_ptbxl
from tests.train.ddp_launch import run_one_machine


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp-strategies")
    root = write_tiny_ptbxl(tmp / "ptbxl", n=40)
    prepared = prepare(PrepareConfig(DataConfig("ptbxl", root, task="superdiagnostic"), cache_dir=tmp / "c"),
                       progress=False)
    return prepared.cache.path


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "epochs"), [("linear", 2), ("gradual", 3)])
def test_two_ranks_train_each_strategy_in_step(cache_path: Path, tmp_path: Path, strategy: str, epochs: int) -> None:
    proc = run_one_machine([str(cache_path), str(tmp_path), strategy], env={"DDP_WORKER_EPOCHS": str(epochs)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(reports[0]["losses"]) == epochs
    assert reports[0]["losses"] == reports[1]["losses"]
    assert reports[0]["digest"] == reports[1]["digest"]  # every trained parameter averaged on both ranks
    groups = reports[0]["groups"]
    # linear: the head alone trains; gradual: one more group per stage, so the last epoch trains 1 + 2n // 3
    training = 1 if strategy == "linear" else 1 + (epochs - 1) * len(groups) // epochs
    assert len(groups) > 1 and 1 <= training < len(groups)
    assert reports[0]["frozen"] == reports[1]["frozen"] == groups[: len(groups) - training]
