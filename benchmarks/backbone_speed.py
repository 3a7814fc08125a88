"""Training-step throughput of backbones against ``xresnet1d50_small``, measured in one run, to size a family for
the CPU: forward + BCE + backward + AdamW on random ``[batch, 12, samples]`` windows (100 Hz x 2.5 s = 250 samples
by default), rounds of each model alternating so a load beside the benchmark weighs on all alike.

    python benchmarks/backbone_speed.py                                        # the S4D candidates
    python benchmarks/backbone_speed.py --models 's4d:{"d_model": 96}' xresnet1d18_small --threads 2

Prints samples/s, parameters and the ratio to the reference; a candidate near 1.0x costs the same CPU minutes
per epoch as the default backbone. Figures from a shared machine need a quiet-machine rerun.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from torch import nn

from ecgml.models import count_parameters, create_backbone

REFERENCE = "xresnet1d50_small"
CANDIDATES = ('s4d_small:{"d_model": 32}', "s4d_small", 's4d_small:{"d_model": 96}', 's4d_small:{"d_model": 128}')


def parse_model(text: str) -> tuple[str, dict[str, Any]]:
    name, _, kwargs = text.partition(":")
    return name, json.loads(kwargs) if kwargs else {}


def step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=list(CANDIDATES), help="NAME[:JSON kwargs] ...")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=250)
    parser.add_argument("--classes", type=int, default=71)
    parser.add_argument("--steps", type=int, default=5, help="Timed steps per round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 12, args.samples)
    y = (torch.rand(args.batch_size, args.classes) < 0.1).float()
    specs = [(REFERENCE, {})] + [parse_model(t) for t in args.models]
    models = [create_backbone(name, num_classes=args.classes, **kw).train() for name, kw in specs]
    for model in models:  # warm-up
        step_seconds(model, x, y, 1)
    best = [float("inf")] * len(models)
    for _ in range(args.rounds):
        for i, model in enumerate(models):
            best[i] = min(best[i], step_seconds(model, x, y, args.steps))
    print(f"batch {args.batch_size} x 12 x {args.samples}, {args.threads} thread(s), best of {args.rounds} rounds")
    print("| model | parameters | samples/s | vs " + REFERENCE + " |\n|---|---|---|---|")
    for (name, kw), model, seconds in zip(specs, models, best, strict=True):
        label = name + (" " + json.dumps(kw) if kw else "")
        rate = args.batch_size / seconds
        print(f"| {label} | {count_parameters(model):,} | {rate:.0f} | {best[0] / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
