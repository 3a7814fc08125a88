"""Pick the device and the speed-ups that are safe on it."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
#: What this process has already said on stderr (each notice once per process: a study trains many runs).
_SAID: set[str] = set()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA, then Apple's MPS, then the CPU (and says so once per process on stderr, where
    it shows whatever the warnings filter: a GPU job that silently trains on the CPU is days slower);
    naming one that is absent is an error.
    ``cuda:N`` becomes the current device, so nothing (NCCL, cuDNN, the object collectives) opens a
    context on GPU 0."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} or cuda:N")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        _say_once("device 'auto': torch sees no CUDA or MPS GPU; training on the CPU")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' asked for, but this machine has no usable Apple GPU")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
        torch.cuda.set_device(device)
    return torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else device


def _say_once(message: str) -> None:
    """``message`` on stderr, the first time this process says it."""
    if message not in _SAID:
        _SAID.add(message)
        sys.stderr.write(f"warning: {message}\n")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast type training uses on ``device``, or None for fp32.

    CUDA: bfloat16 from compute capability 8.0 (Ampere) on, float16 with a loss scaler below it:
    ``torch.cuda.is_bf16_supported()`` is also true on GPUs that only emulate bfloat16 (T4, V100), slowly.
    Other devices train in fp32 (CPU autocast is slower than fp32 for these convolutions).
    """
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    """How a run's precision is logged: fp32, bf16-mixed or fp16-mixed."""
    return {None: "fp32", torch.bfloat16: "bf16-mixed", torch.float16: "fp16-mixed"}[dtype]


@dataclass(frozen=True)
class Precision:
    """How training runs its steps on a device: the autocast type (None: fp32) and, for float16 only, a
    loss scaler. One rule for the trainer, the run's logged params and the throughput benchmark."""

    device_type: str
    dtype: torch.dtype | None = None

    @classmethod
    def choose(cls, device: torch.device, amp: bool | None = None) -> Precision:
        """:func:`amp_dtype`'s choice on ``device``; ``amp`` forces mixed precision on (bfloat16 where the
        device has no choice of its own) or off."""
        dtype = amp_dtype(device)
        if amp is not None:
            dtype = (dtype or torch.bfloat16) if amp else None
        return cls(device.type, dtype)

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def name(self) -> str:
        return precision_name(self.dtype)

    def autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device_type, dtype=self.dtype, enabled=self.enabled)

    def scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, on only for float16 (bfloat16 has float32's range and needs none)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)


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
