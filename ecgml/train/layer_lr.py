"""Learning rate per parameter group: layer-wise rates for fine-tuning and the rates a module asks for.

Layer-wise rates (``--layer-lr-fractions``): the head trains at the run's rate and the backbone's groups (every
group before the head, input to output) at fixed fractions of it, as fine-tuning of pretrained ECG models does
(e.g. 1/100 for the stem and the first stages up to 1/10 for the last one). One fraction applies to every
backbone group; one per group is taken as given; two are the first and the last group's fractions with the
groups between spread geometrically (fastai's ``slice(lo, hi)``).

Module overrides: a module with a class attribute ``optim_overrides`` (``{"lr": cap, "weight_decay": wd}``) has
its own parameters trained at ``min(group lr, cap)`` with that weight decay, in a group of their own (the S4D
kernel's state-space parameters, as the S4 papers train them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

LAYER_LR_OPTION = "--layer-lr-fractions"


def check_fractions(fractions: Sequence[float]) -> None:
    """Each fraction in (0, 1]; a clear error naming the option otherwise."""
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        raise ValueError(f"{LAYER_LR_OPTION}: every fraction of the head's rate must be in (0, 1], not {bad}")


def group_lr_scales(names: Sequence[str], fractions: Sequence[float], backbone: str = "this model") -> dict[str, float]:
    """``{group: factor of the head's rate}`` for the groups ``names`` (the head last) and ``fractions``."""
    check_fractions(fractions)
    if len(names) < 2 or names[-1] != "head":
        raise ValueError(f"{LAYER_LR_OPTION} needs a backbone with parameter groups (stem/stages before a head); "
                         f"{backbone} has {list(names) or 'none'}")
    body = list(names[:-1])
    if len(fractions) == 1:
        scales = [float(fractions[0])] * len(body)
    elif len(fractions) == len(body):
        scales = [float(f) for f in fractions]
    elif len(fractions) == 2:
        lo, hi = float(fractions[0]), float(fractions[1])
        steps = len(body) - 1
        scales = [lo * (hi / lo) ** (i / steps) for i in range(len(body))]
    else:
        raise ValueError(f"{LAYER_LR_OPTION}: give 1, 2 or {len(body)} fractions for the backbone groups of "
                         f"{backbone} ({', '.join(body)}), not {len(fractions)}")
    return {**dict(zip(body, scales, strict=True)), names[-1]: 1.0}


def check_layer_lr(model: nn.Module, fractions: Sequence[float], backbone: str) -> None:
    """Refuses, before training, layer-wise rates for a model without parameter groups (or the wrong count)."""
    if fractions:
        group_lr_scales(list(getattr(model, "group_names", [])), fractions, backbone)


def split_overrides(params: list[nn.Parameter], model: nn.Module, lr: float,
                    weight_decay: float) -> list[dict[str, Any]]:
    """``params`` as optimizer groups: those of modules with ``optim_overrides`` in groups of their own."""
    special: dict[int, dict[str, float]] = {}
    for module in model.modules():
        overrides = getattr(type(module), "optim_overrides", None)
        if overrides:
            for p in module.parameters(recurse=False):
                special[id(p)] = overrides
    plain = [p for p in params if id(p) not in special]
    out: list[dict[str, Any]] = [{"params": plain, "lr": lr, "weight_decay": weight_decay}] if plain else []
    by_override: dict[tuple[float, float], list[nn.Parameter]] = {}
    for p in params:
        if id(p) in special:
            o = special[id(p)]
            key = (min(lr, o.get("lr", lr)), o.get("weight_decay", weight_decay))
            by_override.setdefault(key, []).append(p)
    out += [{"params": ps, "lr": group_lr, "weight_decay": wd} for (group_lr, wd), ps in by_override.items()]
    return out
