"""Training throughput of the engine versus the bare model on the same batches, measured in one run.

The engine's epoch includes everything a real run pays for: reading crops from the memory-mapped cache,
standardising, batching, the scheduler, gradient clipping, validation excluded. The bare loop runs
forward + backward + optimizer step on the same batches already stacked in memory. Target (CPU): the
engine reaches at least 0.9 of the bare throughput. On a GPU (``--device cuda --num-workers 4``) the
same ratio says whether the data path starves the GPU: near 1 it does not.

    python benchmarks/train_throughput.py [--records 2000] [--backbone xresnet1d50_small] [--epochs 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.prepare import prepare
from ecgml.data.synth import generate_ptbxl
from ecgml.models import create_backbone
from ecgml.train.device import resolve_device
from ecgml.train.loop import OptimConfig, Trainer
from ecgml.train.pipeline import ModelConfig, TrainConfig, build_splits, make_datasets

TARGET = 0.9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--backbone", default="xresnet1d50_small")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ecgml-throughput-"))
    try:
        generate_ptbxl(scratch / "ptbxl", args.records, seed=0, sampling_rates=(100,), progress=False)
        data = PrepareConfig(DataConfig("ptbxl", scratch / "ptbxl", task="superdiagnostic"), cache_dir=scratch / "c")
        config = TrainConfig(kind="pretrain", data=data, model=ModelConfig(args.backbone),
                             optim=OptimConfig(epochs=args.epochs + 1, batch_size=args.batch_size, patience=0),
                             num_workers=args.num_workers)
        prepared = prepare(data, progress=False)
        splits = build_splits(prepared, 1.0, 0)
        train, val, _ = make_datasets(prepared.cache, splits, config)
        n_classes = len(splits.classes)
        device = resolve_device(args.device)
        print(f"{len(train)} training records, batch {args.batch_size}, backbone {args.backbone}, "
              f"{torch.get_num_threads()} torch threads, {args.num_workers} loader workers")

        torch.manual_seed(0)
        model = create_backbone(args.backbone, in_channels=12, num_classes=n_classes)
        trainer = Trainer(model, train, val, splits.val.labels, config.optim, score_fn=lambda y, p: 0.0,
                          device=device, checkpoint_path=scratch / "ck.pt", progress=False)
        trainer._train_epoch(0)  # warm-up epoch (allocator, first touch of the cache pages); schedule has room
        start = time.perf_counter()
        seen = sum(trainer._train_epoch(e)[1] for e in range(1, args.epochs + 1))
        engine = seen / (time.perf_counter() - start)

        torch.manual_seed(0)
        bare_model = create_backbone(args.backbone, in_channels=12, num_classes=n_classes).to(device)
        optimizer = torch.optim.AdamW(bare_model.parameters(), lr=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        train.set_epoch(0)
        items = [train[i] for i in range(len(train))]
        batches = [(torch.stack([x for x, _ in items[i:i + args.batch_size]]).to(device),
                    torch.stack([y for _, y in items[i:i + args.batch_size]]).to(device))
                   for i in range(0, len(items), args.batch_size)]
        bare_model.train()

        def bare_epoch() -> int:
            count = 0
            for x, y in batches:
                with torch.autocast(device_type=device.type, dtype=trainer.amp_dtype, enabled=trainer.amp):
                    loss = loss_fn(bare_model(x).float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                count += len(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return count

        bare_epoch()  # warm-up
        start = time.perf_counter()
        seen = sum(bare_epoch() for _ in range(args.epochs))
        bare = seen / (time.perf_counter() - start)
        ratio = engine / bare
        print(f"engine: {engine:.0f} samples/s; bare forward-backward-step: {bare:.0f} samples/s; "
              f"ratio {ratio:.2f} ({'meets' if ratio >= TARGET else 'MISSES'} the {TARGET} target)")
        print(f"data path alone: {len(train) / _time_data(train, args.batch_size):.0f} samples/s "
              "(crops + standardisation + batching, no model)")
        return 0 if ratio >= TARGET else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _time_data(dataset: torch.utils.data.Dataset, batch_size: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
