"""Run by tests/train/test_distributed.py under ``torch.distributed.run`` with two CPU processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ecgml.data.cache import Cache
from ecgml.models import create_backbone
from ecgml.train.data import RandomCropDataset, SlidingWindowDataset, SplitArrays
from ecgml.train.distributed import init_distributed, shutdown_distributed
from ecgml.train.loop import OptimConfig, Trainer


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    keep = (y.sum(0) > 0) & (y.sum(0) < len(y))
    return float(roc_auc_score(y[:, keep], p[:, keep], average="macro"))


def main(cache_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    cache = Cache(Path(cache_dir))
    classes, labels = cache.load_labels("superdiagnostic", "challenge")
    folds = cache.records["fold"].to_numpy()

    def split(mask: np.ndarray) -> SplitArrays:
        rows = np.flatnonzero(mask)
        return SplitArrays(rows, cache.records["n_valid"].to_numpy()[rows], labels[rows],
                           tuple(cache.records["record_id"].iloc[rows]))

    train, val = split(folds <= 8), split(folds > 8)
    mean, std = cache.stats
    torch.manual_seed(0)
    model = create_backbone("xresnet1d18", in_channels=12, num_classes=len(classes), width=0.25, layers=[1, 1])
    seen: list[int] = []
    trainer = Trainer(model, RandomCropDataset(cache.signals, train, mean, std, 250, seed=1),
                      SlidingWindowDataset(cache.signals, val, mean, std, 250, 125), val.labels,
                      OptimConfig(epochs=2, batch_size=8, lr=3e-3, patience=0), score_fn=_auc,
                      device=torch.device("cpu"), checkpoint_path=Path(out_dir) / "ck.pt", seed=1,
                      dist_ctx=ctx, progress=False, on_epoch=lambda r: seen.append(r.epoch))
    result = trainer.fit()
    probs = trainer.predict(trainer.val_data, "max")
    report = {"rank": ctx.rank, "world": ctx.world_size, "history": [h.val_macro_auc for h in result.history],
              "losses": [h.train_loss for h in result.history], "logged": seen, "probs_sum": float(probs.sum()),
              "n_probs": len(probs), "steps": trainer.steps_per_epoch}
    (Path(out_dir) / f"rank{ctx.rank}.json").write_text(json.dumps(report))
    shutdown_distributed(ctx)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
