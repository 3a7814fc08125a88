"""The data path on the device: a split's standardised signals held there whole, crops and windows cut
there by a vectorised gather, so a GPU never waits for a loader.

PTB-XL at 100 Hz is about 1 GB in float32, so it fits on any training GPU; each split is standardised
once when it is moved (the same float32 arithmetic as the host path, so the crops and windows are the
same numbers), and the crop starts come from the same ``(seed, epoch)`` plan
(:class:`~ecgml.train.data.CropBatches`), so a run gives the same crops on either path.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ecgml.data.windows import INPUT_DOMAINS
from ecgml.defaults import DEVICE_DATA
from ecgml.train.data import RandomCropDataset, SlidingWindowDataset, StandardisedSignals

#: Share of the device's free memory the signals may take (the rest is the model's, activations, cuDNN).
FREE_SHARE = 0.5
_CHUNK_ROWS = 1024  # rows standardised per host step while moving (bounds the host copy)


def signal_bytes(*datasets: RandomCropDataset | SlidingWindowDataset) -> int:
    """Bytes the datasets' records take as float32 on the device."""
    total = 0
    for ds in datasets:
        _, leads, samples = ds.source.signals.shape
        total += len(ds.split) * leads * samples * 4
    return total


def use_device_data(mode: str, device: torch.device, nbytes: int) -> bool:
    """Whether to hold the data on ``device``; ``on`` when it does not fit is an error that says so."""
    if mode not in DEVICE_DATA:
        raise ValueError(f"device data must be one of {', '.join(DEVICE_DATA)}, not {mode!r}")
    if mode == "off":
        return False
    if device.type != "cuda":
        return mode == "on"  # the host's memory: only when asked (tests, a CPU run that wants no workers)
    free, _ = torch.cuda.mem_get_info(device)
    fits = nbytes <= FREE_SHARE * free
    if mode == "on" and not fits:
        raise ValueError(f"device data 'on': the splits take {nbytes / 2**30:.2f} GiB, more than {FREE_SHARE:.0%} of "
                         f"the {free / 2**30:.2f} GiB free on {device}; use 'auto' or 'off' (the host loader)")
    return fits


def torch_input_domain(x: torch.Tensor, domain: str) -> torch.Tensor:
    """:func:`ecgml.data.windows.to_input_domain` on device tensors (float32 FFT: equal to ~1e-6)."""
    if domain == "time":
        return x
    if domain not in INPUT_DOMAINS:
        raise ValueError(f"unknown input domain {domain!r}; choose one of {', '.join(INPUT_DOMAINS)}")
    spectrum = torch.fft.rfft(x, dim=-1)
    part = {"fft_magnitude": torch.abs, "fft_real": torch.real, "fft_imag": torch.imag}[domain](spectrum)
    return (part / float(np.sqrt(x.shape[-1]))).float()


class DeviceSignals:
    """Standardised rows of one split on the device, and windows cut from them."""

    def __init__(self, source: StandardisedSignals, rows: np.ndarray, device: torch.device) -> None:
        _, leads, samples = source.signals.shape
        self.domain = source.domain
        self.signals = torch.empty((len(rows), leads, samples), dtype=torch.float32, device=device)
        for i in range(0, len(rows), _CHUNK_ROWS):
            part = np.asarray(source.signals[np.asarray(rows[i:i + _CHUNK_ROWS])], dtype=np.float32)
            standardised = (part - source.mean) * source.inv_std
            self.signals[i:i + len(part)].copy_(torch.from_numpy(standardised))

    def windows(self, index: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
        """``[len(index), leads, length]``: row ``index[i]`` from ``starts[i]``, in one gather."""
        view = self.signals.unfold(-1, length, 1)  # [rows, leads, positions, length], no copy
        return torch_input_domain(view[index, :, starts], self.domain)


class DeviceCrops:
    """Training crops on the device: the epoch's plan moves over once, then every batch is a gather."""

    def __init__(self, dataset: RandomCropDataset, device: torch.device) -> None:
        self.crop = dataset.crop
        self.device = device
        self.signals = DeviceSignals(dataset.source, dataset.split.rows, device)
        self.labels = dataset.labels.to(device)

    def batches(self, order: np.ndarray, starts: np.ndarray, batch_size: int
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches in ``order`` (record positions in the split) with crops from ``starts``."""
        index = torch.from_numpy(np.asarray(order, dtype=np.int64)).to(self.device, non_blocking=True)
        begin = torch.from_numpy(np.asarray(starts, dtype=np.int64)).to(self.device, non_blocking=True)
        for i in range(0, len(order), batch_size):
            rows = index[i:i + batch_size]
            yield self.signals.windows(rows, begin[i:i + batch_size], self.crop), self.labels[rows]


class DeviceWindows:
    """Evaluation windows on the device, many records' windows per batch."""

    def __init__(self, dataset: SlidingWindowDataset, device: torch.device) -> None:
        self.crop = dataset.crop
        self.device = device
        self.signals = DeviceSignals(dataset.source, dataset.split.rows, device)
        self.owner = torch.from_numpy(dataset.owner).to(device)
        self.starts = torch.from_numpy(dataset.starts).to(device)

    def batches(self, indices: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        """Windows ``indices`` (in order), ``batch_size`` at a time."""
        chosen = torch.from_numpy(np.asarray(indices, dtype=np.int64)).to(self.device, non_blocking=True)
        for i in range(0, len(indices), batch_size):
            part = chosen[i:i + batch_size]
            yield self.signals.windows(self.owner[part], self.starts[part], self.crop)
