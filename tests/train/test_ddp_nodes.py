"""Two "nodes" (one torchrun each on 127.0.0.1, LOCAL_RANK 0 on both) that share no folder: each reads
its own cache, and a resumed run gets rank 0's checkpoint although the other node has none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.prepare import prepare
from tests.data.trees import write_tiny_ptbxl
from tests.mlflow_store import seeded_sqlite_uri
from tests.train.ddp_launch import RUN_WORKER, run_nodes


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


@pytest.mark.slow
def test_each_machine_builds_its_cache_once_while_its_other_ranks_wait(tmp_path: Path) -> None:
    """Two machines of two ranks, no shared folder: the first rank of each builds that machine's cache
    (slowly: longer than the collective timeout) and its other rank waits, then reads it."""
    root = write_tiny_ptbxl(tmp_path / "ptbxl", n=40)
    reports = tmp_path / "reports"
    reports.mkdir()
    env = {"MLFLOW_TRACKING_URI": seeded_sqlite_uri(tmp_path / "mlflow.db"), "ECGML_DIST_TIMEOUT_S": "3",
           "DDP_SOLO_DELAY_S": "5", "DDP_REPORT_DIR": str(reports)}
    done = run_nodes(["build", str(root), str(tmp_path / "c{node}")], nproc=2, env=env, script=RUN_WORKER)
    assert [p.returncode for p in done] == [0, 0], done[0].stderr[-2000:] + done[1].stderr[-2000:]
    ranks = [json.loads((reports / f"rank{r}.json").read_text()) for r in range(4)]
    assert [(r["node"], r["local_rank"]) for r in ranks] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # the first rank of each machine found no cache and built it; the other found it built
    assert [r["cache_found"] for r in ranks] == [False, True, False, True]
    assert [r["delayed"] for r in ranks] == [["cache"], [], ["cache"], []]
    assert len({r["digest"] for r in ranks}) == 1
    for node in (0, 1):  # each machine's own folder holds its cache
        assert [p.name for p in (tmp_path / f"c{node}").iterdir() if p.is_dir() and not p.name.startswith(".")]
