"""Checkpoints a killed run can resume from: written atomically every epoch, loaded without unpickling.

A checkpoint holds the model, optimiser, scheduler and scaler states, the epoch just finished, the
best validation score so far (and the best weights), the per-epoch history and the MLflow run id, so
``--resume`` continues the same run with no epoch lost or repeated. It is loaded with
``torch.load(weights_only=True)``: tensors and plain containers only, so a tampered file cannot run
code; anything else is refused with a clear error.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ecgml.io import atomic_write_stream
from ecgml.train.distributed import DistContext, from_main

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, tampered or of another format."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: the previous checkpoint survives a crash, a kill or a full
    disk mid-write, and the error (an ``OSError``) names ``path``."""
    payload = {"format": CHECKPOINT_FORMAT, **state}
    atomic_write_stream(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything but plain data."""
    return _parse(_read(Path(path)), Path(path))


def load_checkpoint_everywhere(path: str | os.PathLike[str], ctx: DistContext) -> dict[str, Any]:
    """The checkpoint rank 0 holds, on every rank: rank 0 reads the file (only its machine has it: no
    shared file system is needed) and sends the bytes; each rank parses them as safely as a file."""
    path = Path(path)

    def read() -> bytes:
        data = _read(path)
        _parse(data, path)  # a bad file fails on rank 0 with its own message, before anything is sent
        return data

    return _parse(from_main(read, ctx), path)


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None


def _parse(data: bytes, path: Path) -> dict[str, Any]:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused: it holds objects other than tensors and plain data "
                              "(tampered, or not an ecgml checkpoint)") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an ecgml checkpoint of format {CHECKPOINT_FORMAT}")
    return state
