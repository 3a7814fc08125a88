"""Two "nodes" (one torchrun each on 127.0.0.1, LOCAL_RANK 0 on both) that share no folder: each reads
its own cache, and a resumed run gets rank 0's checkpoint although the other node has none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.prepare import prepare
from tests.data.trees import write_tiny_ptbxl
from tests.train.ddp_launch import run_nodes


@pytest.mark.slow
def test_resume_on_two_nodes_without_a_shared_file_system(tmp_path: Path) -> None:
    root = write_tiny_ptbxl(tmp_path / "ptbxl", n=40)
    names = {prepare(PrepareConfig(DataConfig("ptbxl", root, task="superdiagnostic"), cache_dir=tmp_path / f"c{r}"),
                     progress=False).cache.path.name for r in (0, 1)}
    (name,) = names
    cache, out = str(tmp_path / "c{rank}" / name), str(tmp_path / "node{rank}")
    first = run_nodes([cache, out, "full"], env={"DDP_WORKER_EPOCHS": "2"})
    assert [p.returncode for p in first] == [0, 0], first[0].stderr[-2000:] + first[1].stderr[-2000:]
    assert (tmp_path / "node0" / "ck.pt").is_file() and not (tmp_path / "node1" / "ck.pt").exists()
    again = run_nodes([cache, out, "full", "resume"], env={"DDP_WORKER_EPOCHS": "2"})
    assert [p.returncode for p in again] == [0, 0], again[0].stderr[-2000:] + again[1].stderr[-2000:]
    reports = [json.loads((tmp_path / f"node{r}" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["resumed_from"] for r in reports] == [1, 1]
    # the history rank 1 reports came from rank 0's checkpoint: rank 1 never had the file
    assert len(reports[0]["losses"]) == 2 and reports[0]["losses"] == reports[1]["losses"]
    assert reports[0]["digest"] == reports[1]["digest"]
