"""Pick the device and the speed-ups that are safe on it."""

from __future__ import annotations

import random

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA, then Apple's MPS, then the CPU; naming one that is absent is an error."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} or cuda:N")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' asked for, but this machine has no usable Apple GPU")
    return torch.device(name)


def configure_speedups(device: torch.device) -> None:
    """cuDNN autotuning and TF32 matmuls on CUDA; nothing on CPU (keeps CPU runs repeatable)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a CPU run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
