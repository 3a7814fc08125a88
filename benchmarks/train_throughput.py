"""Training throughput of the engine against a bare step on the same batches, and evaluation speed.

What is compared, in one run, on one model and device:

* **engine**: ``Trainer``'s training epoch as a real run pays for it: the crops read from the cache (through
  the loader and its workers, or cut on the device), standardisation, batching, the copy to the device,
  autocast and the loss scaler, the one-cycle schedule, the loss accumulated for the epoch's log;
* **bare**: forward + BCE + backward + AdamW step on the same batches, already stacked on the device.

Both sides get the same speed settings (``configure_speedups``, the trainer's autocast type, the same
thread count), read their loss once per epoch, and synchronise the device before the clock starts and
stops; their timed epochs alternate, so a load beside the benchmark weighs on both alike.
``engine / bare`` near 1 means the data path costs nothing next to the model: on a GPU it says whether
the GPU waits on Python. Target: >= 0.95 on the CPU. On CUDA the engine's epoch is also run
under ``torch.profiler``, and the GPU busy fraction (kernel time / wall time) is printed.

Evaluation: ``Trainer.predict`` on the validation fold (every sliding window, aggregated per record),
as records/s and windows/s; its time per window is compared with the engine's time per training sample
(target: evaluation at least as fast per sample as training).

    python benchmarks/train_throughput.py                      # synthetic full-size PTB-XL tree, CPU
    python benchmarks/train_throughput.py --root ~/.cache/ecgml/real-ptbxl --cache-dir /tmp/c --splits 1-7/8/9 \\
        --num-workers 0,1,2 --train-records 1024 --eval-records 256
    python benchmarks/train_throughput.py --root /data/ptbxl --device cuda --num-workers 0,4 \\
        --device-data on,off --compile
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgml.config import DataConfig, PrepareConfig
from ecgml.data.prepare import prepare
from ecgml.defaults import DEFAULT_SPLITS
from ecgml.models import create_backbone
from ecgml.train.data import SplitArrays
from ecgml.train.device import Precision, configure_speedups, resolve_device
from ecgml.train.loop import OptimConfig, Trainer
from ecgml.train.pipeline import ModelConfig, TrainConfig, build_splits, make_datasets

TARGET = 0.95
FULL_SIZE = 21_799  # records in PTB-XL


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _subset(split: SplitArrays, n: int | None) -> SplitArrays:
    """The first ``n`` records of a split (all of them for None): a smaller run with the same records."""
    if n is None or n >= len(split):
        return split
    return SplitArrays(split.rows[:n], split.n_valid[:n], split.labels[:n], split.record_ids[:n])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer_options(device_data: str, compile_model: bool) -> dict[str, Any]:
    """The trainer's data-path options that this version of the engine has (so the same script measures
    an older engine, for before/after figures)."""
    known = inspect.signature(Trainer).parameters
    options: dict[str, Any] = {}
    if "device_data" in known:
        options["device_data"] = device_data
    elif device_data == "on":
        raise SystemExit("this engine has no device data path (--device-data on)")
    if "compile_model" in known:
        options["compile_model"] = compile_model
    elif compile_model:
        raise SystemExit("this engine has no torch.compile option")
    return options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="a PTB-XL root (default: a synthetic tree of --records)")
    parser.add_argument("--records", type=int, default=FULL_SIZE, help="records of the synthetic tree")
    parser.add_argument("--cache-dir", type=Path, help="where the 100 Hz cache is built (default: a temp folder)")
    parser.add_argument("--splits", default=DEFAULT_SPLITS,
                        help="train/val/test folds (a tree of folds 1-9 only: 1-7/8/9)")
    parser.add_argument("--train-records", type=int, help="time on the first N training records (default: all)")
    parser.add_argument("--eval-records", type=int, help="evaluate the first N validation records (default: all)")
    parser.add_argument("--backbone", default="xresnet1d101")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs on each side (after a warm-up)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=_int_list, default=[0], help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--device-data", default="off", help="comma-separated of auto, on, off")
    parser.add_argument("--compile", action="store_true", help="also measure the engine under torch.compile")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ecgml-throughput-"))
    try:
        root = args.root
        if root is None:
            from ecgml.data.synth import generate_ptbxl

            root = generate_ptbxl(scratch / "ptbxl", args.records, seed=0, sampling_rates=(100,), progress=False).root
        data = PrepareConfig(DataConfig("ptbxl", root.expanduser(), task="superdiagnostic", splits=args.splits),
                             cache_dir=(args.cache_dir or scratch / "cache").expanduser(), workers=2)
        config = TrainConfig(kind="pretrain", data=data, model=ModelConfig(args.backbone),
                             optim=OptimConfig(epochs=args.epochs + 2, batch_size=args.batch_size, patience=0))
        prepared = prepare(data, progress=False)
        splits = build_splits(prepared, 1.0, 0)
        splits = replace(splits, train=_subset(splits.train, args.train_records),
                         val=_subset(splits.val, args.eval_records))
        train, val, _ = make_datasets(prepared.cache, splits, config)
        device = resolve_device(args.device)
        configure_speedups(device)
        print(f"{root}: {len(train)} training records, {len(val.split)} validation records ({len(val)} windows), "
              f"backbone {args.backbone}, batch {args.batch_size}, device {device} "
              f"({Precision.choose(device).name}), {torch.get_num_threads()} torch threads")
        worst, bare = np.inf, None
        for device_data in args.device_data.split(","):
            for compile_model in ([False, True] if args.compile else [False]):
                for workers in ([0] if device_data == "on" else args.num_workers):
                    options = _trainer_options(device_data, compile_model)
                    trainer = _trainer(args, config, splits, train, val, device, workers, options, scratch)
                    if bare is None:
                        bare = _BareStep(args, train, len(splits.classes), device, trainer.precision_policy)
                    figures = _measure(args, trainer, bare, val, config.optim.aggregate, device)
                    worst = min(worst, _report(figures, workers, options))
        return 0 if worst >= TARGET or device.type != "cpu" else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _BareStep:
    """Forward + BCE + backward + AdamW on batches already stacked on the device, under the trainer's own
    precision (its autocast type and loss scaler, from the same :class:`Precision`), with its loss summed
    on the device and read once per epoch as the engine does."""

    def __init__(self, args: argparse.Namespace, train: Any, n_classes: int, device: torch.device,
                 precision: Precision) -> None:
        torch.manual_seed(0)
        self.model = create_backbone(args.backbone, in_channels=12, num_classes=n_classes).to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.precision, self.device = precision, device
        self.scaler = precision.scaler()
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        train.set_epoch(0)
        items = [train[i] for i in range(len(train))]
        self.batches = [(torch.stack([x for x, _ in items[i:i + args.batch_size]]).to(device),
                         torch.stack([y for _, y in items[i:i + args.batch_size]]).to(device))
                        for i in range(0, len(items), args.batch_size)]
        self.epoch()  # warm-up (allocator, cuDNN autotuning)

    def epoch(self) -> int:
        total = torch.zeros((), device=self.device)
        for x, y in self.batches:
            with self.precision.autocast():
                loss = self.loss_fn(self.model(x).float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.detach() * len(x)
        total.item()
        return sum(len(x) for x, _ in self.batches)


def _timed(work: Callable[[], int], device: torch.device) -> tuple[float, int]:
    """Seconds and samples of ``work``, with the device synchronised before and after."""
    _sync(device)
    start = time.perf_counter()
    seen = work()
    _sync(device)
    return time.perf_counter() - start, seen


def _trainer(args: argparse.Namespace, config: TrainConfig, splits: Any, train: Any, val: Any, device: torch.device,
             workers: int, options: dict[str, Any], scratch: Path) -> Trainer:
    torch.manual_seed(0)
    model = create_backbone(args.backbone, in_channels=12, num_classes=len(splits.classes))
    return Trainer(model, train, val, splits.val.labels, config.optim, score_fn=lambda y, p: 0.0, device=device,
                   checkpoint_path=scratch / "ck.pt", num_workers=workers, progress=False, **options)


def _measure(args: argparse.Namespace, trainer: Trainer, bare: _BareStep, val: Any, aggregate: Any,
             device: torch.device) -> dict[str, float]:
    """Engine and bare epochs in alternation (a load beside the benchmark weighs on both alike), then the
    evaluation of the validation windows, and on CUDA the GPU busy fraction of one more epoch."""
    trainer._train_epoch(0)  # warm-up epoch (allocator, worker start, first touch of the cache pages)
    times = {"engine": 0.0, "bare": 0.0}
    seen = {"engine": 0, "bare": 0}
    for epoch in range(1, args.epochs + 1):
        for side, work in (("engine", lambda e=epoch: trainer._train_epoch(e)[1]), ("bare", bare.epoch)):
            seconds, n = _timed(work, device)
            times[side] += seconds
            seen[side] += n
    figures = {side: seen[side] / times[side] for side in times}
    if device.type == "cuda":
        figures["busy"] = _gpu_busy(trainer, args.epochs + 1)
    trainer.predict(val, aggregate)  # warm-up of the evaluation path
    seconds, _ = _timed(lambda: len(trainer.predict(val, aggregate)), device)
    figures.update(records=len(val.split) / seconds, windows=len(val) / seconds)
    return figures


def _report(figures: dict[str, float], workers: int, options: dict[str, Any]) -> float:
    """Print one configuration's figures; returns its engine/bare ratio."""
    engine, bare = figures["engine"], figures["bare"]
    ratio = engine / bare
    label = ", ".join([f"{workers} loader workers"] + [f"{k}={v}" for k, v in options.items()])
    busy = figures.get("busy")
    print(f"engine ({label}): {engine:.1f} samples/s, bare step {bare:.1f} samples/s, engine/bare {ratio:.3f} "
          f"({'meets' if ratio >= TARGET else 'MISSES'} the {TARGET} target)"
          + (f"; GPU busy {busy:.0%} of an epoch" if busy is not None else ""))
    per_window = figures["windows"]
    print(f"  evaluation: {figures['records']:.1f} records/s, {per_window:.1f} windows/s "
          f"({per_window / engine:.2f}x the training samples/s; {'meets' if per_window >= engine else 'MISSES'} "
          "the >= 1 target)", flush=True)
    return ratio


def _gpu_busy(trainer: Trainer, epoch: int) -> float:
    """Kernel time over wall time of one more training epoch, from ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with contextlib.ExitStack() as stack:
        prof = stack.enter_context(profile(activities=activities))
        torch.cuda.synchronize()
        start = time.perf_counter()
        trainer._train_epoch(epoch)
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - start) * 1e6
    kernel_us = sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages()
                    if e.device_type == torch.autograd.DeviceType.CUDA)
    return kernel_us / wall_us


if __name__ == "__main__":
    sys.exit(main())
