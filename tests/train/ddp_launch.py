"""Start CPU processes under ``torch.distributed.run`` for the DDP tests: one machine with N ranks, or
several "nodes" (one torchrun each, on 127.0.0.1) that share no folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "train" / "ddp_worker.py"
RUN_WORKER = REPO / "tests" / "train" / "ddp_run_worker.py"


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT"))}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(extra or {})}


def run_one_machine(args: Sequence[str], *, nproc: int = 2, env: dict[str, str] | None = None,
                    script: Path = WORKER, timeout: float = 300,
                    cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node nproc script args`` (in ``cwd``: MLflow writes ./mlruns)."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", str(script), *args],
                          env=_env(env), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def run_nodes(args: Sequence[str], *, nodes: int = 2, nproc: int = 1, env: dict[str, str] | None = None,
              script: Path = WORKER, timeout: float = 300) -> list[subprocess.CompletedProcess[str]]:
    """One torchrun per node (``nproc`` ranks each; LOCAL_RANK restarts at 0 on each), joined on 127.0.0.1."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
                               f"--nproc_per_node={nproc}", f"--node_rank={rank}", "--master_addr=127.0.0.1",
                               f"--master_port={port}", str(script), *args],
                              env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(nodes)]
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done
