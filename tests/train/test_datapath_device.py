"""The batched and on-device data paths cut the same crops and windows as item access, give the same
training and predictions, build their loaders once, and never sync the device per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from ecgml.data.cache.cache import build_cache
from ecgml.data.signal import Preprocessing
from ecgml.data.sources.ptbxl import read_ptbxl
from ecgml.models import create_backbone
from ecgml.train.data import CropBatches, RandomCropDataset, SlidingWindowDataset, SplitArrays, shard
from ecgml.train.device_data import DeviceCrops, DeviceWindows, use_device_data
from ecgml.train.loop import OptimConfig, Trainer
from tests.data.trees import write_tiny_ptbxl


@pytest.fixture(scope="module")
def cache_and_splits(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = write_tiny_ptbxl(tmp_path_factory.mktemp("t") / "ptbxl", n=40)
    dataset = read_ptbxl(root, fs=100, task="superdiagnostic")
    cache = build_cache(dataset, Preprocessing(fs=100), tmp_path_factory.mktemp("c"), progress=False)
    labels = dataset.label_matrix(dataset.records.set_index("record_id").loc[cache.records["record_id"]].reset_index())
    rng = np.random.default_rng(0)

    def split(folds: set[int], short: bool) -> SplitArrays:
        rows = np.flatnonzero(cache.records["fold"].isin(folds).to_numpy())
        n_valid = cache.records["n_valid"].to_numpy()[rows].copy()
        if short:  # records of several lengths, some shorter than the crop (zero-padded)
            n_valid = rng.integers(200, 1001, len(rows))
        return SplitArrays(rows, n_valid, labels[rows], tuple(cache.records["record_id"].iloc[rows]))

    return cache, split(set(range(1, 9)), True), split({9, 10}, True)


def _datasets(cache_and_splits: tuple, domain: str = "time") -> tuple[RandomCropDataset, SlidingWindowDataset]:
    cache, train, val = cache_and_splits
    mean, std = cache.stats
    return (RandomCropDataset(cache.signals, train, mean, std, 250, seed=4, domain=domain),
            SlidingWindowDataset(cache.signals, val, mean, std, 250, 125, domain=domain))


def test_batches_are_the_crops_item_access_gives(cache_and_splits: tuple) -> None:
    train, windows = _datasets(cache_and_splits)
    plan = CropBatches(train, batch_size=8, seed=4)
    plan.set_epoch(3)
    train.set_epoch(3)
    order, starts = plan.plan()
    assert sorted(order.tolist()) == list(range(len(train)))
    rooms = np.maximum(train.split.n_valid - 250, 0)
    assert (starts >= 0).all() and (starts <= rooms[order]).all()  # never into the zero padding
    first_batch = next(iter(plan))[0]
    batch_x, batch_y = train.batch(order[:8], starts[:8])
    for k, index in enumerate(order[:8]):
        item_x, item_y = train[int(index)]
        torch.testing.assert_close(batch_x[k], item_x, rtol=0, atol=0)
        torch.testing.assert_close(batch_y[k], item_y, rtol=0, atol=0)
    np.testing.assert_array_equal(first_batch, order[:8])
    wx, owner = windows.batch(np.arange(len(windows)))
    cache, _, val = cache_and_splits
    mean, std = cache.stats
    for k in (0, len(windows) // 2, len(windows) - 1):
        row, start = int(val.rows[owner[k]]), int(windows.starts[k])
        raw = (np.asarray(cache.signals[row, :, start:start + 250]) - mean[:, None]) / std[:, None]
        np.testing.assert_allclose(wx[k].numpy(), raw, rtol=1e-6, atol=1e-6)
    again = CropBatches(train, batch_size=8, seed=4)
    again.set_epoch(3)
    np.testing.assert_array_equal(again.plan()[1], starts)  # a function of (seed, epoch) alone
    again.set_epoch(4)
    assert not np.array_equal(again.plan()[1], starts)


@pytest.mark.parametrize("domain", ["time", "fft_magnitude"])
def test_device_crops_and_windows_equal_the_host_ones(cache_and_splits: tuple, domain: str) -> None:
    train, windows = _datasets(cache_and_splits, domain)
    device = torch.device("cpu")
    plan = CropBatches(train, batch_size=8, seed=4)
    plan.set_epoch(1)
    order, starts = plan.plan()
    exact: dict[str, Any] = {"rtol": 0, "atol": 0} if domain == "time" else {"rtol": 1e-5, "atol": 1e-5}
    on_device = list(DeviceCrops(train, device).batches(order, starts, 8))
    on_host = [train.batch(order[i:i + 8], starts[i:i + 8]) for i in range(0, len(order), 8)]
    assert len(on_device) == len(on_host)
    for (dx, dy), (hx, hy) in zip(on_device, on_host, strict=True):
        torch.testing.assert_close(dx, hx, **exact)
        torch.testing.assert_close(dy, hy, rtol=0, atol=0)
    picked = np.array([5, 0, 3, len(windows) - 1, 7])
    dev = torch.cat(list(DeviceWindows(windows, device).batches(picked, 2)))
    torch.testing.assert_close(dev, windows.batch(picked)[0], **exact)


def _trainer(cache_and_splits: tuple, tmp_path: Path, **options: Any) -> Trainer:
    train, windows = _datasets(cache_and_splits)
    torch.manual_seed(0)
    model = create_backbone("xresnet1d18", in_channels=12, num_classes=3, width=0.25, layers=[1, 1])
    return Trainer(model, train, windows, cache_and_splits[2].labels,
                   OptimConfig(epochs=2, batch_size=8, lr=3e-3, patience=0),
                   score_fn=lambda y, p: float(p.mean()), device=torch.device("cpu"),
                   checkpoint_path=tmp_path / "ck.pt", seed=4, progress=False, **options)


def test_device_path_trains_and_predicts_as_the_host_path(cache_and_splits: tuple, tmp_path: Path) -> None:
    host = _trainer(cache_and_splits, tmp_path / "h", device_data="off")
    device = _trainer(cache_and_splits, tmp_path / "d", device_data="on")
    assert not host.device_data and device.device_data
    torch.manual_seed(1)  # the same dropout draws on both
    a = host.fit()
    torch.manual_seed(1)
    b = device.fit()
    for x, y in zip(a.history, b.history, strict=True):
        assert x.train_loss == pytest.approx(y.train_loss, rel=1e-6)
        assert x.val_loss == pytest.approx(y.val_loss, rel=1e-6)
    _, windows = _datasets(cache_and_splits)
    np.testing.assert_allclose(host.predict(windows, "max"), device.predict(windows, "max"), rtol=1e-5, atol=1e-6)


def test_loaders_are_built_once_and_workers_cut_the_same_crops(cache_and_splits: tuple, tmp_path: Path) -> None:
    alone = _trainer(cache_and_splits, tmp_path / "a", num_workers=0)
    workers = _trainer(cache_and_splits, tmp_path / "w", num_workers=2)
    loader = workers._train_loader(0)
    assert loader.persistent_workers and loader.num_workers == 2
    for epoch in (0, 1):  # persistent workers keep their dataset copy: epoch 1's crops must still be new
        got = list(workers._train_loader(epoch))
        want = list(alone._train_loader(epoch))
        assert len(got) == len(want)
        for (gx, gy), (wx, wy) in zip(got, want, strict=True):
            torch.testing.assert_close(gx, wx, rtol=0, atol=0)
            torch.testing.assert_close(gy, wy, rtol=0, atol=0)
    assert workers._train_loader(1) is loader
    _, windows = _datasets(cache_and_splits)
    np.testing.assert_array_equal(workers.predict(windows, "mean"), alone.predict(windows, "mean"))
    assert workers.batches.loaders_built == 2  # training + these windows; a second predict reuses its loader
    workers.predict(windows, "mean")
    assert workers.batches.loaders_built == 2


class _SyncSpy(torch.Tensor):
    """A loss that records every call that would make the host wait for the device."""

    syncs: ClassVar[list[str]] = []

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", str(func))
        if name in ("item", "__float__", "__int__", "__bool__", "tolist", "numpy", "cpu"):
            cls.syncs.append(name)
        return super().__torch_function__(func, types, args, kwargs or {})


def test_the_loss_is_summed_on_the_device_and_read_once_per_epoch(cache_and_splits: tuple, tmp_path: Path) -> None:
    trainer = _trainer(cache_and_splits, tmp_path, device_data="on")
    bce = nn.BCEWithLogitsLoss()
    trainer.loss_fn = lambda logits, y: bce(logits, y).as_subclass(_SyncSpy)  # type: ignore[assignment]
    _SyncSpy.syncs.clear()
    loss, seen = trainer._train_epoch(0)
    assert trainer.steps_per_epoch > 1 and seen == len(trainer.train_data)
    assert _SyncSpy.syncs == ["item"]  # one read of the summed loss, none per step
    assert np.isfinite(loss)


def test_compile_wraps_the_training_module_once(cache_and_splits: tuple, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[nn.Module] = []
    calls: list[int] = []

    def fake_compile(module: nn.Module) -> Any:
        compiled.append(module)
        return lambda x: calls.append(len(x)) or module(x)

    monkeypatch.setattr(torch, "compile", fake_compile)
    trainer = _trainer(cache_and_splits, tmp_path, compile_model=True)
    trainer._train_epoch(0)
    trainer._train_epoch(1)
    assert compiled == [trainer.train_model]
    assert sum(calls) == 2 * len(trainer.train_data)
    assert not _trainer(cache_and_splits, tmp_path / "off").compile_model


def test_device_data_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert use_device_data("on", cpu, 10**12) and not use_device_data("auto", cpu, 1)
    assert not use_device_data("off", cpu, 1)
    with pytest.raises(ValueError, match="device data must be one of auto, on, off, not 'gpu'"):
        use_device_data("gpu", cpu, 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * 2**30, 80 * 2**30))
    cuda = torch.device("cuda", 0)
    assert use_device_data("auto", cuda, 2**30) and not use_device_data("auto", cuda, 3 * 2**30)
    with pytest.raises(ValueError, match=r"take 3\.00 GiB, more than 50% of the 4\.00 GiB free on cuda:0"):
        use_device_data("on", cuda, 3 * 2**30)


def test_shards_are_disjoint_equal_and_cover_every_record() -> None:
    order = np.array([4, 2, 0, 1, 3])
    parts = [shard(order, r, 2) for r in range(2)]
    assert [len(p) for p in parts] == [3, 3]
    assert set(np.concatenate(parts)) == set(order)
    np.testing.assert_array_equal(shard(order, 0, 1), order)
