"""Run under ``torch.distributed.run`` with CPU processes by the tests/train/test_distributed.py and
test_ddp_*.py tests.

``ddp_worker.py CACHE OUT [STRATEGY [RESUME]]``: CACHE and OUT may hold ``{rank}``, so that each rank has
its own folders (two "nodes" without a shared file system); the checkpoint is ``OUT/ck.pt``. RESUME is
``resume`` to continue from rank 0's checkpoint (the other ranks have none). ``$DDP_WORKER_BACKBONE`` (JSON
``[name, kwargs]``) picks another backbone than the tiny xresnet1d18.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from ecgml.data.cache.cache import Cache
from ecgml.models import create_backbone
from ecgml.train.data import RandomCropDataset, SlidingWindowDataset, SplitArrays
from ecgml.train.distributed import init_distributed, shutdown_distributed
from ecgml.train.loop import OptimConfig, Trainer


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    keep = (y.sum(0) > 0) & (y.sum(0) < len(y))
    return float(roc_auc_score(y[:, keep], p[:, keep], average="macro"))


def _digest(model: torch.nn.Module) -> str:
    """Identical weights on every rank give identical digests (DDP kept them in step)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def main(cache_dir: str, out_dir: str, strategy: str = "full", mode: str = "train") -> None:
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    cache = Cache(Path(cache_dir.format(rank=ctx.rank)))
    out = Path(out_dir.format(rank=ctx.rank))
    out.mkdir(parents=True, exist_ok=True)
    classes, labels = cache.load_labels("superdiagnostic", "challenge")
    folds = cache.records["fold"].to_numpy()

    def split(mask: np.ndarray) -> SplitArrays:
        rows = np.flatnonzero(mask)
        return SplitArrays(rows, cache.records["n_valid"].to_numpy()[rows], labels[rows],
                           tuple(cache.records["record_id"].iloc[rows]))

    train, val = split(folds <= 8), split(folds > 8)
    mean, std = cache.stats
    torch.manual_seed(0)
    default = '["xresnet1d18", {"width": 0.25, "layers": [1, 1]}]'
    name, kwargs = json.loads(os.environ.get("DDP_WORKER_BACKBONE", default))
    model = create_backbone(name, in_channels=12, num_classes=len(classes), **kwargs)
    seen: list[int] = []
    epochs = int(os.environ.get("DDP_WORKER_EPOCHS", "2"))
    trainer = Trainer(model, RandomCropDataset(cache.signals, train, mean, std, 250, seed=1),
                      SlidingWindowDataset(cache.signals, val, mean, std, 250, 125), val.labels,
                      OptimConfig(epochs=epochs, batch_size=8, lr=3e-3, patience=0, strategy=strategy),
                      score_fn=_auc, device=torch.device("cpu"), checkpoint_path=out / "ck.pt", seed=1,
                      dist_ctx=ctx, progress=False, on_epoch=lambda r: seen.append(r.epoch))
    result = trainer.fit(resume=mode == "resume")
    probs = trainer.predict(trainer.val_data, "max")
    report = {"rank": ctx.rank, "world": ctx.world_size, "history": [h.val_macro_auc for h in result.history],
              "losses": [h.train_loss for h in result.history], "logged": seen, "probs_sum": float(probs.sum()),
              "n_probs": len(probs), "steps": trainer.steps_per_epoch, "digest": _digest(model),
              "resumed_from": result.resumed_from, "frozen": list(model.frozen_groups),
              "groups": list(model.group_names)}
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(report))
    shutdown_distributed(ctx)


if __name__ == "__main__":
    main(*sys.argv[1:])
