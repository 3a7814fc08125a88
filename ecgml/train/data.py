"""What the training loop eats: random crops for training, sliding windows for evaluation.

Both read rows of a :class:`~ecgml.data.cache.Cache` (a memory map, so workers share pages instead of
copies) and standardise them with the training split's per-lead statistics. Crops are drawn from the
valid part of each record only (never from zero padding), from a generator seeded by
``(seed, epoch, index)``: the same run draws the same crops whatever the number of loader workers, and a
resumed run continues with exactly the crops it would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ecgml.data.windows import INPUT_DOMAINS, to_input_domain, window_starts


@dataclass(frozen=True)
class SplitArrays:
    """One split as the loaders need it: cache rows, valid lengths, labels, record ids."""

    rows: np.ndarray
    n_valid: np.ndarray
    labels: np.ndarray
    record_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (len(self.rows) == len(self.n_valid) == len(self.labels) == len(self.record_ids)):
            raise ValueError("rows, lengths, labels and record ids must have one entry per record")

    def __len__(self) -> int:
        return len(self.rows)


class _Standardised:
    def __init__(self, signals: np.ndarray, mean: np.ndarray, std: np.ndarray, domain: str = "time") -> None:
        self.signals = signals
        self.mean = np.asarray(mean, dtype=np.float32)[:, None]
        self.inv_std = (1.0 / np.asarray(std, dtype=np.float32))[:, None]
        if domain not in INPUT_DOMAINS:
            raise ValueError(f"unknown input domain {domain!r}; choose one of {', '.join(INPUT_DOMAINS)}")
        self.domain = domain

    def window(self, row: int, start: int, length: int) -> np.ndarray:
        x = np.asarray(self.signals[row, :, start:start + length], dtype=np.float32)
        return to_input_domain((x - self.mean) * self.inv_std, self.domain)


class RandomCropDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One random crop of ``crop`` samples per record per epoch (``center=True``: the centre crop)."""

    def __init__(self, signals: np.ndarray, split: SplitArrays, mean: np.ndarray, std: np.ndarray,
                 crop: int, seed: int = 0, center: bool = False, domain: str = "time") -> None:
        if crop > signals.shape[-1]:
            raise ValueError(f"crop of {crop} samples is longer than the cached records ({signals.shape[-1]})")
        self.source = _Standardised(signals, mean, std, domain)
        self.split = split
        self.crop = crop
        self.seed = seed
        self.center = center
        self.epoch = 0
        self.labels = torch.from_numpy(np.asarray(split.labels, dtype=np.float32))

    def set_epoch(self, epoch: int) -> None:
        """Choose the crops of this epoch (call before iterating, as with DistributedSampler)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def start(self, index: int) -> int:
        room = max(int(self.split.n_valid[index]) - self.crop, 0)
        if self.center:
            return room // 2
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return int(rng.integers(0, room + 1))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.source.window(int(self.split.rows[index]), self.start(index), self.crop)
        return torch.from_numpy(x), self.labels[index]


class SlidingWindowDataset(Dataset[tuple[torch.Tensor, int]]):
    """Every window of every record, with the record position each belongs to (for aggregation)."""

    def __init__(self, signals: np.ndarray, split: SplitArrays, mean: np.ndarray, std: np.ndarray,
                 crop: int, stride: int, domain: str = "time") -> None:
        if crop > signals.shape[-1]:
            raise ValueError(f"crop of {crop} samples is longer than the cached records ({signals.shape[-1]})")
        if stride <= 0:
            raise ValueError(f"window stride must be positive, not {stride}")
        self.source = _Standardised(signals, mean, std, domain)
        self.split = split
        self.crop = crop
        pairs = [(i, int(s)) for i in range(len(split)) for s in window_starts(int(split.n_valid[i]), crop, stride)]
        self.owner = np.array([p[0] for p in pairs], dtype=np.int64)
        self.starts = np.array([p[1] for p in pairs], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.owner)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        owner = int(self.owner[index])
        x = self.source.window(int(self.split.rows[owner]), int(self.starts[index]), self.crop)
        return torch.from_numpy(x), owner
