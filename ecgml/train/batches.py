"""Where one run's batches come from, decided once per run: cut on the device from the splits held there,
or by loaders built once (persistent workers, pinned memory on CUDA) that cut whole batches in one
vectorised gather. Either way the crops and windows are the same numbers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ecgml.train.data import BatchFetch, CropBatches, IndexBatches, RandomCropDataset, SlidingWindowDataset
from ecgml.train.device_data import DeviceCrops, DeviceWindows, signal_bytes, use_device_data


class BatchSource:
    """Training batches of each epoch and evaluation windows of many records per batch, for one run."""

    def __init__(self, train_data: RandomCropDataset, val_data: SlidingWindowDataset, *, batch_size: int,
                 seed: int, device: torch.device, num_workers: int = 0, rank: int = 0, world_size: int = 1,
                 device_data: str = "auto") -> None:
        self.train_data = train_data
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.num_workers = num_workers
        self.plan = CropBatches(train_data, batch_size, seed, rank, world_size)
        self.on_device = use_device_data(device_data, device, signal_bytes(train_data, val_data))
        self._device_train = DeviceCrops(train_data, device) if self.on_device else None
        self._device_windows: dict[int, tuple[SlidingWindowDataset, DeviceWindows]] = {}
        self._loaders: dict[tuple[int, int], tuple[object, DataLoader]] = {}

    @property
    def loaders_built(self) -> int:
        return len(self._loaders)

    def train(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of ``epoch``: the same permutation on every rank, then disjoint shards."""
        self.plan.set_epoch(epoch)
        if self._device_train is not None:
            order, starts = self.plan.plan()
            return self._device_train.batches(order, starts, self.batch_size)
        return self._loader((id(self.train_data), 0), self.train_data, self.plan)

    def windows(self, windows: SlidingWindowDataset, mine: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        """Windows ``mine`` of ``windows`` (many records per batch), on the device."""
        if self.on_device:
            key = id(windows)
            if key not in self._device_windows or self._device_windows[key][0] is not windows:
                self._device_windows[key] = (windows, DeviceWindows(windows, self.device))
            yield from self._device_windows[key][1].batches(mine, batch_size)
            return
        for x, _ in self._loader((id(windows), batch_size), windows, IndexBatches(mine, batch_size)):
            yield x.to(self.device, non_blocking=True)

    def _loader(self, key: tuple[int, int], dataset: RandomCropDataset | SlidingWindowDataset,
                sampler: Sampler) -> DataLoader:
        """A loader of whole batches, built the first time ``key`` is asked for and kept for the run."""
        if key not in self._loaders or self._loaders[key][0] is not dataset:
            workers = self.num_workers
            # its own generator: a loader's iterator draws a seed, which must not come from the global RNG
            # (dropout's), or the host path would train differently from the device path
            loader = DataLoader(BatchFetch(dataset), batch_size=None, sampler=sampler, num_workers=workers,
                                pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                                generator=torch.Generator().manual_seed(self.seed))
            self._loaders[key] = (dataset, loader)
        return self._loaders[key][1]
