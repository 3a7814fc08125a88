"""How a tuning study runs (storage, workers, heartbeats, GPUs): the settings both the study (:mod:`ecgml.tune.study`)
and its worker pool (:mod:`ecgml.tune.pool`) read, in a module of their own so neither imports the other for them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunSettings:
    """How the study runs (not part of the study: each invocation may differ)."""

    storage: str
    workers: int = 1
    heartbeat_interval: int = 30
    grace_period: int | None = None
    max_retry: int | None = 3
    #: One GPU id per worker, round robin (each worker process sees only its own: CUDA_VISIBLE_DEVICES).
    gpus: tuple[str, ...] = ()
    register: bool = True
