"""Multi-process training under ``torchrun``: who am I, and reductions across ranks.

Only rank 0 writes checkpoints and talks to MLflow; every rank computes, and metrics are reduced so
that rank 0 logs numbers for the whole batch of data, not its own shard.

Two rules make the same code right on NCCL (GPUs, several nodes) and gloo (CPUs):

* every collective runs on :attr:`DistContext.device`: the rank's own GPU under NCCL, which reduces
  CUDA tensors only, the CPU under gloo. Objects (run ids, predictions, checkpoint states) travel as
  byte tensors on that device, never through torch's object collectives, which pick a device by
  themselves.
* work that only one rank does (building a cache, waiting for a tracking server, evaluating, uploading,
  registering) never sits inside a training collective. The other ranks wait for it on a separate gloo
  group whose timeout (``$ECGML_DIST_WAIT_S``) is long, and they learn whether it failed, so that a
  failure is reported once, by the rank that failed, and torchrun does not stop that rank mid-message.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ecgml.runtime.env import env_seconds

#: Timeout of a training collective (s): how long a rank waits for the others at a step or an epoch's end.
DEFAULT_DIST_TIMEOUT_S = 1800.0
#: How long ranks wait for another rank's single-rank work (s): a cache build, a tracking outage, uploads.
DEFAULT_DIST_WAIT_S = 86400.0


T = TypeVar("T")


class PeerFailed(RuntimeError):
    """Another rank failed during work the ranks had to finish together; that rank reports why."""


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: Where collectives run: the rank's GPU under NCCL, the CPU under gloo.
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: The gloo group with the long timeout that ranks wait on for single-rank work (None when alone).
    wait_group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """The first rank on its machine (builds that machine's cache)."""
        return self.local_rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_timeout_s() -> float:
    """``$ECGML_DIST_TIMEOUT_S``: the timeout of training collectives."""
    return env_seconds("ECGML_DIST_TIMEOUT_S", DEFAULT_DIST_TIMEOUT_S, allow_zero=False)


def dist_wait_s() -> float:
    """``$ECGML_DIST_WAIT_S``: how long ranks wait for one rank's single-rank work."""
    return env_seconds("ECGML_DIST_WAIT_S", DEFAULT_DIST_WAIT_S, allow_zero=False)


def collective_device(backend: str, device: torch.device) -> torch.device:
    """The device a backend reduces on: NCCL only takes CUDA tensors, gloo is used with CPU tensors."""
    return device if backend == "nccl" else torch.device("cpu")


def init_distributed(device: torch.device | str) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment (a no-op when run alone).

    On CUDA each rank takes GPU ``LOCAL_RANK`` (``set_device`` first, so NCCL and the object collectives
    never open a context on GPU 0) and NCCL; otherwise gloo. Both timeouts are explicit (see
    :func:`dist_timeout_s`, :func:`dist_wait_s`).
    """
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=device if device.type == "cuda" else torch.device("cpu"))
    timeout, wait = dist_timeout_s(), dist_wait_s()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout))
    wait_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=wait))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       device=collective_device(backend, device), wait_group=wait_group)


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum a few floats over ranks (loss totals and counts)."""
    if not ctx.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def _encode(obj: Any, device: torch.device) -> torch.Tensor:
    return torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8).to(device)


def _decode(tensor: torch.Tensor, size: int) -> Any:
    return pickle.loads(tensor[:size].cpu().numpy().tobytes())  # from a rank of the same job


def _device(ctx: DistContext, group: Any) -> torch.device:
    return torch.device("cpu") if group is not None else ctx.device  # the wait group is gloo


def all_gather(obj: Any, ctx: DistContext, *, group: Any = None) -> list[Any]:
    """Every rank's ``obj``, in rank order (small objects: per-window predictions of a shard).
    ``group``: another group than the training one (:attr:`DistContext.wait_group`, on the CPU)."""
    if not ctx.enabled:
        return [obj]
    device = _device(ctx, group)
    payload = _encode(obj, device)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, size, group=group)
    lengths = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=device)
    padded[: payload.numel()] = payload
    out = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(out, padded, group=group)
    return [_decode(t, n) for t, n in zip(out, lengths, strict=True)]


def broadcast_object(obj: Any, ctx: DistContext, *, group: Any = None) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the decision to stop early). ``group``: another group than
    the training one (:attr:`DistContext.wait_group`, on the CPU)."""
    if not ctx.enabled:
        return obj
    device = _device(ctx, group)
    payload = _encode(obj, device) if ctx.is_main else torch.zeros(0, dtype=torch.uint8, device=device)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0, group=group)
    if not ctx.is_main:
        payload = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(payload, src=0, group=group)
    return obj if ctx.is_main else _decode(payload, int(size.item()))


def broadcast_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP sends them at the start of
    each forward in training, so after the last step each rank holds the statistics of its own last
    batch; evaluating with those would score each shard with a slightly different model than the one
    rank 0 saves."""
    if ctx.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def from_main(fn: Callable[[], T], ctx: DistContext) -> T:
    """``fn()`` computed by rank 0 alone and handed to every rank (a checkpoint only rank 0's machine
    holds, the MLflow run rank 0 opens). The other ranks wait for it on the long-timeout group (``fn``
    may wait on a tracking server); a failure on rank 0 is raised there and as :class:`PeerFailed` on the
    others, instead of leaving them in a collective. ``fn`` runs on rank 0 only."""
    if not ctx.enabled:
        return fn()
    group = ctx.wait_group
    if ctx.is_main:
        try:
            value = fn()
        except Exception as exc:
            broadcast_object(("error", f"{type(exc).__name__}: {exc}"), ctx, group=group)
            raise
        broadcast_object(("ok", value), ctx, group=group)
        return value
    kind, value = broadcast_object(None, ctx, group=group)
    if kind == "error":
        raise PeerFailed(f"rank 0 failed ({str(value).splitlines()[0][:200]}); its own error says more")
    return value


def solo(fn: Callable[[], T], ctx: DistContext, *, here: bool) -> T | None:
    """Work that only some ranks do (``here`` is true on those: rank 0's evaluation and uploads, each
    machine's cache build), while the others wait for it on the long-timeout group, never in a training
    collective whose timeout the work could outlast. Every rank learns whether it failed (:func:`settle`).
    Returns ``fn()`` where it ran, None elsewhere."""
    value, failure = None, None
    if here:
        try:
            value = fn()
        except Exception as exc:
            failure = exc
    settle(ctx, failure)
    return value


def barrier(ctx: DistContext) -> None:
    """Every rank here before any goes on (a training-time barrier, under the collective timeout)."""
    if ctx.enabled:
        all_reduce_sum([0.0], ctx)  # a reduction on the collective device: NCCL's barrier guesses a GPU


def settle(ctx: DistContext, failure: BaseException | None = None) -> None:
    """End of a phase some ranks did alone: wait (on the long-timeout group) until every rank got here,
    and learn who failed. The failed rank re-raises its own error; the others raise :class:`PeerFailed`.
    """
    if not ctx.enabled:
        if failure is not None:
            raise failure
        return
    status = None if failure is None else f"{type(failure).__name__}: {failure}"
    statuses = all_gather(status, ctx, group=ctx.wait_group)
    if failure is not None:
        raise failure
    failed = [(rank, s) for rank, s in enumerate(statuses) if s is not None]
    if failed:
        rank, why = failed[0]
        raise PeerFailed(f"rank {rank} failed ({why.splitlines()[0][:200]}); its own error says more")


def report_peer_failure(ctx: DistContext, exc: PeerFailed) -> None:
    """What a rank says when it stops because another rank failed (once, on stderr)."""
    sys.stderr.write(f"ecgml rank {ctx.rank}: stopping: {exc}\n")


def shutdown_distributed(ctx: DistContext, *, wait: bool = True) -> None:
    """Wait for every rank (unless failing; on the long-timeout group), then leave the process group: a
    process that exits with the group alive can be aborted by the gloo threads still running
    ("terminate called without an active exception")."""
    if ctx.enabled and dist.is_initialized():
        if wait:
            dist.barrier(group=ctx.wait_group)
        dist.destroy_process_group()
