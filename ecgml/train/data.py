"""What the training loop eats: random crops for training, sliding windows for evaluation, in batches.

Both read rows of a :class:`~ecgml.data.cache.cache.Cache` (a memory map, so workers share pages instead of
copies) and standardise them with the training split's per-lead statistics. A batch is cut in one
vectorised gather (no Python loop over its records), on the host here or on the device
(:mod:`ecgml.train.device_data`), with the same crops and windows either way.

Crops are drawn from the valid part of each record only (never from zero padding). An epoch's crop
starts and its order are a function of ``(seed, epoch)`` alone, chosen in the main process
(:class:`CropBatches`): the same run draws the same crops whatever the number of loader workers (even
persistent ones, which keep their own copy of the dataset), and a resumed run continues with exactly the
crops it would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch.utils.data import Dataset, Sampler

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


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order records are visited in ``epoch``: the same permutation on every rank and every resume."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).numpy()


def shard(order: Sequence[int] | np.ndarray, rank: int, world_size: int, batch_size: int | None = None) -> np.ndarray:
    """This rank's share of ``order``: disjoint, equal-sized shards (padded by wrapping around, as
    DistributedSampler does), so no rank waits for a batch the others never send.

    With ``batch_size``, a shard whose last batch would hold one record leaves it out (every rank alike:
    the shards are equal): BatchNorm learns nothing sound from a batch of one, and which training-set
    size ends that way changes with the world size."""
    order = np.asarray(order, dtype=np.int64)
    if world_size > 1:
        total = -(-len(order) // world_size) * world_size
        order = np.concatenate([order, order[: total - len(order)]])[rank::world_size]
    if batch_size and len(order) > 1 and len(order) % batch_size == 1:
        order = order[:-1]
    return order


class StandardisedSignals:
    """Standardised windows of cache rows, cut many at a time."""

    def __init__(self, signals: np.ndarray, mean: np.ndarray, std: np.ndarray, domain: str = "time") -> None:
        self.signals = signals
        self.mean = np.asarray(mean, dtype=np.float32)[:, None]
        self.inv_std = (1.0 / np.asarray(std, dtype=np.float32))[:, None]
        if domain not in INPUT_DOMAINS:
            raise ValueError(f"unknown input domain {domain!r}; choose one of {', '.join(INPUT_DOMAINS)}")
        self.domain = domain

    def windows(self, rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """``float32[len(rows), leads, length]``: window ``i`` is row ``rows[i]`` from ``starts[i]``, in one
        gather through a strided view (only the windows are read, not the whole rows)."""
        view = sliding_window_view(self.signals, length, axis=-1)  # [records, leads, positions, length]
        x = np.asarray(view[np.asarray(rows, dtype=np.int64), :, np.asarray(starts, dtype=np.int64)],
                       dtype=np.float32)
        return to_input_domain((x - self.mean) * self.inv_std, self.domain)

    def window(self, row: int, start: int, length: int) -> np.ndarray:
        return self.windows(np.array([row]), np.array([start]), length)[0]


class RandomCropDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One random crop of ``crop`` samples per record per epoch (``center=True``: the centre crop)."""

    def __init__(self, signals: np.ndarray, split: SplitArrays, mean: np.ndarray, std: np.ndarray,
                 crop: int, seed: int = 0, center: bool = False, domain: str = "time") -> None:
        if crop > signals.shape[-1]:
            raise ValueError(f"crop of {crop} samples is longer than the cached records ({signals.shape[-1]})")
        self.source = StandardisedSignals(signals, mean, std, domain)
        self.split = split
        self.crop = crop
        self.seed = seed
        self.center = center
        self.epoch = 0
        self.labels = torch.from_numpy(np.asarray(split.labels, dtype=np.float32))
        self._rooms = np.maximum(np.asarray(split.n_valid, dtype=np.int64) - crop, 0)
        self._starts: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Choose the crops of this epoch for item access (loaders take theirs from :class:`CropBatches`)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def crop_starts(self, epoch: int) -> np.ndarray:
        """Every record's crop start in ``epoch``, drawn at once from a generator seeded by
        ``(seed, epoch)``, uniform over the valid part of the record."""
        if self._starts is None or self._starts[0] != epoch:
            if self.center:
                starts = self._rooms // 2
            else:
                starts = np.random.default_rng((self.seed, epoch)).integers(0, self._rooms + 1)
            self._starts = (epoch, starts.astype(np.int64))
        return self._starts[1]

    def start(self, index: int) -> int:
        return int(self.crop_starts(self.epoch)[index])

    def batch(self, indices: np.ndarray, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The crops of records ``indices`` from ``starts``, and their labels, as one batch."""
        indices = np.asarray(indices, dtype=np.int64)
        x = self.source.windows(self.split.rows[indices], starts, self.crop)
        return torch.from_numpy(x), self.labels[torch.from_numpy(indices)]

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
        self.source = StandardisedSignals(signals, mean, std, domain)
        self.split = split
        self.crop = crop
        per_record = [window_starts(int(n), crop, stride) for n in split.n_valid]
        self.owner = np.repeat(np.arange(len(split), dtype=np.int64), [len(s) for s in per_record])
        self.starts = np.concatenate(per_record).astype(np.int64) if per_record else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.owner)

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``indices`` (of many records) as one batch, with the record each belongs to."""
        indices = np.asarray(indices, dtype=np.int64)
        owner = self.owner[indices]
        x = self.source.windows(self.split.rows[owner], self.starts[indices], self.crop)
        return torch.from_numpy(x), torch.from_numpy(owner)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        owner = int(self.owner[index])
        x = self.source.window(int(self.split.rows[owner]), int(self.starts[index]), self.crop)
        return torch.from_numpy(x), owner


class CropBatches(Sampler[tuple[np.ndarray, np.ndarray]]):
    """One epoch of this rank's training batches as ``(record indices, crop starts)``, chosen in the
    main process so that loader workers, persistent or not, cut exactly these crops."""

    def __init__(self, dataset: RandomCropDataset, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self) -> tuple[np.ndarray, np.ndarray]:
        """This rank's record order in the epoch and the crop start of each."""
        mine = shard(epoch_order(len(self.dataset), self.seed, self.epoch), self.rank, self.world_size,
                     self.batch_size)
        return mine, self.dataset.crop_starts(self.epoch)[mine]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order, starts = self.plan()
        for i in range(0, len(order), self.batch_size):
            yield order[i:i + self.batch_size], starts[i:i + self.batch_size]

    def __len__(self) -> int:
        return -(-len(shard(np.arange(len(self.dataset)), self.rank, self.world_size, self.batch_size))
                 // self.batch_size)


class IndexBatches(Sampler[tuple[np.ndarray]]):
    """Fixed batches of the given indices, in order (evaluation windows of many records per batch)."""

    def __init__(self, indices: np.ndarray, batch_size: int) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[tuple[np.ndarray]]:
        for i in range(0, len(self.indices), self.batch_size):
            yield (self.indices[i:i + self.batch_size],)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)


class BatchFetch(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Serves whole batches to a ``DataLoader(batch_size=None, sampler=...)``: each key the sampler
    yields is one batch, cut by the dataset's ``batch`` in the worker that receives it."""

    def __init__(self, dataset: RandomCropDataset | SlidingWindowDataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset.batch(*key)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.dataset)
