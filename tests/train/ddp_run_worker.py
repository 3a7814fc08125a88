"""Run under ``torch.distributed.run`` with CPU processes by tests/train/test_ddp_runner.py and
test_ddp_nodes.py: the real tracked run on every rank, with the work some ranks do alone made slow.

``ddp_run_worker.py cli ARGS...``: the ``ecgml`` command line (``ecgml ARGS...``: ``run_training``).
``ddp_run_worker.py build ROOT CACHE_DIR``: only the run's preparation (tracking check, cache, splits,
model); CACHE_DIR may hold ``{node}`` (torchrun's ``GROUP_RANK``), so each "machine" has its own folder.

Environment:

* ``DDP_SOLO_DELAY_S``: seconds added to each piece of work one rank does alone: the cache build (on the
  first rank of each machine), opening the MLflow run and the end-of-run tracking wait (on rank 0).
* ``DDP_TRACKING_DOWN=1``: rank 0's end-of-run wait ends as if the tracking server never came back.
* ``DDP_REPORT_DIR``: where each rank writes ``rank{RANK}.json`` (the delays it took, whether its
  machine's cache was there when it prepared, how many registered weights it downloaded, how its run
  ended).
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import wraps
from pathlib import Path
from typing import Any

RANK, LOCAL_RANK, NODE = (int(os.environ.get(k, "0")) for k in ("RANK", "LOCAL_RANK", "GROUP_RANK"))
report: dict[str, Any] = {"rank": RANK, "local_rank": LOCAL_RANK, "node": NODE, "delayed": [], "cache_found": None,
                          "downloads": 0}


def _delay(phase: str) -> None:
    seconds = float(os.environ.get("DDP_SOLO_DELAY_S", "0"))
    if seconds:
        report["delayed"].append(phase)
        time.sleep(seconds)


def _cache_there(cache_dir: Path) -> bool:
    return cache_dir.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in cache_dir.iterdir())


def _inject() -> None:
    """Make the runner's solo work slow: the cache build, opening the run, the end-of-run tracking wait."""
    from ecgml.tracking import registry, runs, store
    from ecgml.train import runner

    prepare, open_run, finish = runner.prepare, runs.open_run, runs.MetricLog.finish
    download = registry.download_weights

    @wraps(download)
    def counted_download(*args: Any, **kwargs: Any) -> Any:
        report["downloads"] += 1
        return download(*args, **kwargs)

    registry.download_weights = counted_download

    @wraps(prepare)
    def slow_prepare(request: Any, *, progress: bool = True) -> Any:
        if report["cache_found"] is None:  # the first call of this rank: is its machine's cache built yet?
            report["cache_found"] = _cache_there(Path(request.cache_dir))
            if not report["cache_found"]:
                _delay("cache")
        return prepare(request, progress=progress)

    def slow_open(*args: Any, **kwargs: Any) -> Any:
        _delay("open")
        return open_run(*args, **kwargs)

    def slow_finish(self: Any, wait_s: float | None = None, *, poll_s: float = 1.0) -> None:
        _delay("end")
        if os.environ.get("DDP_TRACKING_DOWN") == "1":
            self.failure = "connection refused (the test's injected outage)"
            raise store.TrackingUnavailable("injected")
        finish(self, wait_s, poll_s=poll_s)

    runner.prepare, runs.open_run, runs.MetricLog.finish = slow_prepare, slow_open, slow_finish


def _build(root: str, cache_dir: str) -> None:
    import torch

    from ecgml.config import DataConfig, PrepareConfig
    from ecgml.train.distributed import init_distributed, shutdown_distributed
    from ecgml.train.pipeline import ModelConfig, TrainConfig
    from ecgml.train.runner import _build_context

    data = PrepareConfig(DataConfig("ptbxl", Path(root), task="superdiagnostic"),
                         cache_dir=Path(cache_dir.format(node=NODE)))
    config = TrainConfig(kind="pretrain", data=data, device="cpu",
                         model=ModelConfig("xresnet1d18", {"width": 0.25, "layers": [1, 1]}))
    ctx = init_distributed("cpu")
    run = _build_context(config, torch.device("cpu"), ctx, progress=False)
    report["digest"] = run.prepared.cache.digest
    shutdown_distributed(ctx)


def main(mode: str, *args: str) -> None:
    _inject()
    try:
        if mode == "build":
            _build(*args)
        else:
            from ecgml.cli import main as cli

            sys.argv = ["ecgml", *args]  # as typed: the resume command a failure prints is built from it
            cli.main(list(args), prog_name="ecgml")
    except SystemExit as exc:
        report["exit"] = exc.code
        raise
    finally:
        folder = os.environ.get("DDP_REPORT_DIR")
        if folder:
            Path(folder, f"rank{RANK}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
