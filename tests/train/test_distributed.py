"""Two CPU processes under torchrun (gloo): same metrics on every rank, only rank 0 reports and checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.prepare import prepare
from tests.data.trees import write_tiny_ptbxl


@pytest.mark.slow
def test_two_gloo_processes_train_one_model(tmp_path: Path) -> None:
    root = write_tiny_ptbxl(tmp_path / "ptbxl", n=40)
    prepared = prepare(PrepareConfig(DataConfig("ptbxl", root, task="superdiagnostic"), cache_dir=tmp_path / "c"),
                       progress=False)
    out = tmp_path / "out"
    out.mkdir()
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(repo / "tests" / "train" / "ddp_worker.py"), str(prepared.cache.path), str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2]
    assert reports[0]["history"] == reports[1]["history"]  # validation gathered from both shards
    assert reports[0]["losses"] == reports[1]["losses"]  # training loss reduced across ranks
    assert reports[0]["probs_sum"] == pytest.approx(reports[1]["probs_sum"])
    assert reports[0]["logged"] == [0, 1] and reports[1]["logged"] == []  # only rank 0 reports
    train_records = int((prepared.cache.records["fold"] <= 8).sum())
    shard = -(-train_records // 2)  # each rank gets ceil(n / 2) records, padded by wrapping around
    assert reports[0]["steps"] == reports[1]["steps"] == -(-shard // 8)
    assert (out / "ck.pt").is_file()
