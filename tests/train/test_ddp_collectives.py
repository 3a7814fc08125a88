"""Collectives on the rank's device: NCCL reduces CUDA tensors only, so a CPU tensor in any collective
crashes every GPU job at its first reduction. Checked on CPU with a training group that refuses what NCCL
refuses (see ddp_nccl_worker.py), and the device each backend gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ecgml.train.distributed import DistContext, all_reduce_sum, collective_device, settle
from tests.train.ddp_launch import REPO, run_one_machine


def test_nccl_collectives_run_on_the_rank_gpu_and_gloo_on_the_cpu() -> None:
    assert collective_device("nccl", torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert collective_device("gloo", torch.device("cuda", 1)) == torch.device("cpu")
    assert collective_device("gloo", torch.device("cpu")) == torch.device("cpu")


def test_alone_nothing_is_communicated() -> None:
    ctx = DistContext()
    assert all_reduce_sum([1.0, 2.0], ctx) == [1.0, 2.0]
    settle(ctx)
    with pytest.raises(ValueError, match="boom"):
        settle(ctx, ValueError("boom"))


@pytest.mark.slow
def test_every_collective_passes_a_group_that_refuses_cpu_tensors(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = run_one_machine([str(out), str(tmp_path / "node{rank}")],
                           script=REPO / "tests" / "train" / "ddp_nccl_worker.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["cpu_tensor_refused"] == "No backend type associated with device type cpu"
        assert report["refused"] == []
        assert report["sum"] == [3.0, 1.0]
        assert report["gathered"] == [{"rank": 0, "rows": [0]}, {"rank": 1, "rows": [0, 1]}]
        assert report["broadcast"] == "from rank 0"
        assert report["from_main"] == {"run_id": "abc"}
        assert report["running_mean"] == [1.0, 1.0, 1.0]  # rank 0's statistics everywhere
        assert report["checkpoint"] == [3, [0.0, 1.0, 2.0, 3.0]]  # rank 1's folder has no checkpoint
    assert not (tmp_path / "node1" / "ck.pt").exists()
