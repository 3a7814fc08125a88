"""Crops, windows, the training loop and exact resumption, on a tiny cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecgml.data.cache.cache import build_cache
from ecgml.data.signal import Preprocessing
from ecgml.data.sources.ptbxl import read_ptbxl
from ecgml.data.windows import aggregate_windows, window_starts
from ecgml.models import create_backbone
from ecgml.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ecgml.train.data import RandomCropDataset, SlidingWindowDataset, SplitArrays
from ecgml.train.loop import OptimConfig, Trainer
from tests.data.trees import write_tiny_ptbxl


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    keep = (y.sum(0) > 0) & (y.sum(0) < len(y))
    return float(roc_auc_score(y[:, keep], p[:, keep], average="macro"))


@pytest.fixture(scope="module")
def cache_and_splits(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = write_tiny_ptbxl(tmp_path_factory.mktemp("t") / "ptbxl", n=40)
    dataset = read_ptbxl(root, fs=100, task="superdiagnostic")
    cache = build_cache(dataset, Preprocessing(fs=100), tmp_path_factory.mktemp("c"), progress=False)
    labels = dataset.label_matrix(dataset.records.set_index("record_id").loc[cache.records["record_id"]].reset_index())

    def split(folds: set[int]) -> SplitArrays:
        rows = np.flatnonzero(cache.records["fold"].isin(folds).to_numpy())
        return SplitArrays(rows, cache.records["n_valid"].to_numpy()[rows], labels[rows],
                           tuple(cache.records["record_id"].iloc[rows]))

    return cache, split(set(range(1, 9))), split({9, 10})


def test_window_starts_cover_the_record() -> None:
    np.testing.assert_array_equal(window_starts(1000, 250, 125), [0, 125, 250, 375, 500, 625, 750])
    np.testing.assert_array_equal(window_starts(1000, 250, 300), [0, 300, 600, 750])
    np.testing.assert_array_equal(window_starts(200, 250, 125), [0])


def test_aggregation() -> None:
    scores = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.3]])
    owner = np.array([0, 0, 1])
    np.testing.assert_allclose(aggregate_windows(scores, owner, 2, "max"), [[0.5, 0.9], [0.3, 0.3]])
    np.testing.assert_allclose(aggregate_windows(scores, owner, 2, "mean"), [[0.3, 0.55], [0.3, 0.3]])


def test_random_crops_are_standardised_repeatable_and_inside_the_record(cache_and_splits: tuple) -> None:
    cache, train, _ = cache_and_splits
    mean, std = cache.stats
    ds = RandomCropDataset(cache.signals, train, mean, std, crop=250, seed=3)
    ds.set_epoch(2)
    x, y = ds[5]
    assert x.shape == (12, 250) and y.shape == (3,)
    start = ds.start(5)
    expected = (np.asarray(cache.signals[train.rows[5], :, start:start + 250]) - mean[:, None]) / std[:, None]
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)
    again = RandomCropDataset(cache.signals, train, mean, std, crop=250, seed=3)
    again.set_epoch(2)
    assert again.start(5) == start
    starts = {ds.start(i) for i in range(len(ds))}
    assert len(starts) > 1 and max(starts) <= 1000 - 250
    ds.set_epoch(3)
    assert [ds.start(i) for i in range(10)] != [again.start(i) for i in range(10)]
    with pytest.raises(ValueError, match="longer than the cached records"):
        RandomCropDataset(cache.signals, train, mean, std, crop=2000)


def _trainer(cache_and_splits: tuple, tmp_path: Path, epochs: int = 4, on_epoch=None) -> Trainer:
    cache, train, val = cache_and_splits
    mean, std = cache.stats
    torch.manual_seed(0)
    model = create_backbone("xresnet1d18", in_channels=12, num_classes=3, width=0.25, layers=[1, 1])
    return Trainer(model, RandomCropDataset(cache.signals, train, mean, std, 250, seed=1),
                   SlidingWindowDataset(cache.signals, val, mean, std, 250, 125), val.labels,
                   OptimConfig(epochs=epochs, batch_size=8, lr=3e-3, patience=0), score_fn=_auc,
                   device=torch.device("cpu"), checkpoint_path=tmp_path / "ck.pt", seed=1, progress=False,
                   on_epoch=on_epoch)


def test_training_lowers_the_loss_and_checkpoints_every_epoch(cache_and_splits: tuple, tmp_path: Path) -> None:
    seen = []
    result = _trainer(cache_and_splits, tmp_path, on_epoch=seen.append).fit()
    assert [r.epoch for r in seen] == [0, 1, 2, 3]
    assert result.history[-1].train_loss < result.history[0].train_loss
    state = load_checkpoint(tmp_path / "ck.pt")
    assert state["epoch"] == 3 and len(state["history"]) == 4
    assert result.best_epoch == int(np.argmax([r.val_macro_auc for r in result.history]))


def test_the_trainer_steps_with_the_eager_adamw(cache_and_splits: tuple, tmp_path: Path) -> None:
    from ecgml.train.optim import EagerAdamW

    assert isinstance(_trainer(cache_and_splits, tmp_path, epochs=1).optimizer, EagerAdamW)


def test_resume_continues_exactly(cache_and_splits: tuple, tmp_path: Path) -> None:
    """Two epochs, a stop, a resume to four: the same numbers as four epochs in one go."""
    straight = _trainer(cache_and_splits, tmp_path / "a").fit()
    first = _trainer(cache_and_splits, tmp_path / "b", epochs=4)
    first.optim = OptimConfig(epochs=4, batch_size=8, lr=3e-3, patience=0)
    # Run only two of the four epochs by stopping after epoch 1 (as a kill would).
    original = first._train_epoch
    calls: list[int] = []

    def stop_after_two(epoch: int) -> tuple[float, int]:
        if epoch == 2:
            raise KeyboardInterrupt
        calls.append(epoch)
        return original(epoch)

    first._train_epoch = stop_after_two  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert calls == [0, 1]
    resumed = _trainer(cache_and_splits, tmp_path / "b").fit(resume=True)
    assert resumed.resumed_from == 1
    assert [r.epoch for r in resumed.history] == [0, 1, 2, 3]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        assert a.val_macro_auc == pytest.approx(b.val_macro_auc, rel=1e-5)


def test_tampered_or_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        load_checkpoint(tmp_path / "none.pt")

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    torch.save({"format": 1, "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    save_checkpoint(tmp_path / "ok.pt", {"epoch": 1, "w": torch.ones(2)})
    assert load_checkpoint(tmp_path / "ok.pt")["epoch"] == 1
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.pt: (refused|unreadable)"):
        load_checkpoint(tmp_path / "bad.pt")


def test_linear_probe_trains_only_the_head(cache_and_splits: tuple, tmp_path: Path) -> None:
    trainer = _trainer(cache_and_splits, tmp_path, epochs=2)
    trainer.optim = OptimConfig(epochs=2, batch_size=8, lr=3e-3, patience=0, strategy="linear")
    cache, train, val = cache_and_splits
    mean, std = cache.stats
    torch.manual_seed(0)
    model = create_backbone("xresnet1d18", in_channels=12, num_classes=3, width=0.25, layers=[1, 1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = Trainer(model, RandomCropDataset(cache.signals, train, mean, std, 250, seed=1),
                    SlidingWindowDataset(cache.signals, val, mean, std, 250, 125), val.labels,
                    OptimConfig(epochs=2, batch_size=8, lr=3e-3, patience=0, strategy="linear"), score_fn=_auc,
                    device=torch.device("cpu"), checkpoint_path=tmp_path / "p.pt", progress=False)
    probe.fit()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("head.") for k in changed)  # BN stats of the frozen body stay too


def test_gradual_unfreezing_schedule(cache_and_splits: tuple, tmp_path: Path) -> None:
    cache, train, val = cache_and_splits
    mean, std = cache.stats
    model = create_backbone("xresnet1d18", in_channels=12, num_classes=3, width=0.25, layers=[1, 1])
    n_groups = len(model.group_names)  # stem, stage1, stage2, head
    trainer = Trainer(model, RandomCropDataset(cache.signals, train, mean, std, 250, seed=1),
                      SlidingWindowDataset(cache.signals, val, mean, std, 250, 125), val.labels,
                      OptimConfig(epochs=n_groups, batch_size=8, lr=3e-3, patience=0, strategy="gradual",
                                  lr_decay=0.5),
                      score_fn=_auc, device=torch.device("cpu"), checkpoint_path=tmp_path / "g.pt", progress=False)
    assert [trainer.trainable_groups(e) for e in range(n_groups)] == list(range(1, n_groups + 1))
    lrs = [g["max_lr"] for g in trainer.optimizer.param_groups]
    assert lrs == sorted(lrs) and lrs[-1] == pytest.approx(3e-3)  # lower layers learn slower
    stem_before = [p.clone() for p in model.stem.parameters()]
    trainer._train_epoch(0)  # head only
    assert all(torch.equal(a, b) for a, b in zip(stem_before, model.stem.parameters(), strict=True))
    trainer._train_epoch(n_groups - 1)  # everything
    assert not all(torch.equal(a, b) for a, b in zip(stem_before, model.stem.parameters(), strict=True))
    with pytest.raises(ValueError, match="strategy must be one of"):
        OptimConfig(strategy="sideways")
