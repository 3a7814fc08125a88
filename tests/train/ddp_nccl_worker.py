"""Run by tests/train/test_ddp_collectives.py under ``torch.distributed.run`` with two CPU processes.

The training group behaves as NCCL does: it refuses tensors that are not on the rank's accelerator
("No backend type associated with device type cpu"). The accelerator is torch's ``lazy`` device, which
a CPU build has; the values travel through gloo on CPU copies. The wait group stays plain gloo (CPU).
Every collective ecgml runs must then pass. ``ddp_nccl_worker.py OUT CHECKPOINT_DIR``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch._lazy
import torch._lazy.ts_backend
import torch.distributed as dist

from ecgml.train.checkpoint import load_checkpoint_everywhere, save_checkpoint
from ecgml.train.distributed import (
    all_gather,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    broadcast_object,
    from_main,
    init_distributed,
    settle,
    shutdown_distributed,
)

ACCELERATOR = torch.device("lazy", 0)
refused: list[str] = []


def _nccl_like(real: Callable[..., Any]) -> Callable[..., Any]:
    def call(first: Any, *args: Any, group: Any = None, **kwargs: Any) -> Any:
        if group is not None:  # the wait group: gloo, CPU tensors
            return real(first, *args, group=group, **kwargs)
        tensors = [*(first if isinstance(first, list) else [first]),
                   *(a for a in args if isinstance(a, torch.Tensor))]
        for t in tensors:
            if t.device != ACCELERATOR:
                refused.append(f"{real.__name__} on {t.device}")
                raise RuntimeError(f"No backend type associated with device type {t.device.type}")
        if isinstance(first, list):  # all_gather(out_list, tensor)
            outs = [t.cpu() for t in first]
            real(outs, args[0].cpu(), *args[1:], **kwargs)
            for t, o in zip(first, outs, strict=True):
                t.copy_(o.to(ACCELERATOR))
        else:
            host = first.cpu()
            real(host, *args, **kwargs)
            first.copy_(host.to(ACCELERATOR))
        return None

    return call


def main(out_dir: str, checkpoint_dir: str) -> None:
    torch._lazy.ts_backend.init()
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    for name in ("all_reduce", "broadcast", "all_gather"):
        setattr(dist, name, _nccl_like(getattr(dist, name)))
    report: dict[str, Any] = {"rank": ctx.rank}
    try:  # what ecgml did before: a CPU tensor in the training group (every rank refuses it alike)
        all_reduce_sum([1.0], ctx)
    except RuntimeError as exc:
        report["cpu_tensor_refused"] = str(exc)
    refused.clear()
    ctx = dataclasses.replace(ctx, device=ACCELERATOR)  # as init_distributed sets it under NCCL
    report["sum"] = all_reduce_sum([1.5, float(ctx.rank)], ctx)
    report["gathered"] = all_gather({"rank": ctx.rank, "rows": list(range(ctx.rank + 1))}, ctx)
    report["broadcast"] = broadcast_object(f"from rank {ctx.rank}", ctx)
    barrier(ctx)
    report["from_main"] = from_main(lambda: {"run_id": "abc"}, ctx)
    norm = torch.nn.BatchNorm1d(3).to(ACCELERATOR)
    norm.running_mean.fill_(float(ctx.rank + 1))
    broadcast_buffers(norm, ctx)
    report["running_mean"] = norm.running_mean.cpu().tolist()
    path = Path(checkpoint_dir.format(rank=ctx.rank)) / "ck.pt"
    if ctx.is_main:
        save_checkpoint(path, {"epoch": 3, "w": torch.arange(4.0)})
    state = load_checkpoint_everywhere(path, ctx)
    report["checkpoint"] = [state["epoch"], state["w"].tolist()]
    settle(ctx)
    report["refused"] = refused
    Path(out_dir, f"rank{ctx.rank}.json").write_text(json.dumps(report))
    shutdown_distributed(ctx)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
