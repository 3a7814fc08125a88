"""The S4D family under two gloo processes (torchrun): gradual unfreezing with its SSM optimizer groups keeps
the ranks in step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecgml.models import get_backbone_entry
from tests.train.ddp_launch import run_one_machine
from tests.train.test_ddp_strategies import cache_path  # noqa: F401 - the tiny cache fixture

TINY = {k: v for k, v in get_backbone_entry("s4d").tiny.items() if k != "num_classes"}


@pytest.mark.slow
def test_two_ranks_train_s4d_gradually_in_step(cache_path: Path, tmp_path: Path) -> None:  # noqa: F811
    env = {"DDP_WORKER_EPOCHS": "3", "DDP_WORKER_BACKBONE": json.dumps(["s4d", TINY])}
    proc = run_one_machine([str(cache_path), str(tmp_path), "gradual"], env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["groups"] == ["stem", "stage1", "stage2", "head"]
    assert len(reports[0]["losses"]) == 3 and reports[0]["losses"] == reports[1]["losses"]
    assert reports[0]["digest"] == reports[1]["digest"]  # every trained parameter averaged on both ranks
