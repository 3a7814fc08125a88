"""InceptionTime-style ``inception1d`` as in Strodthoff et al.'s PTB-XL benchmark (after Fawaz et al. 2020).

Each inception module: a 1x1 bottleneck conv (32) feeding convs with kernels 39, 19 and 9 (32 filters each),
plus a max-pool(3) -> 1x1 conv branch on the module input; the four outputs are concatenated (128 channels),
batch-normalised and ReLU'd. Six modules; every three form a stage closed by a residual shortcut from the
stage input (1x1 conv + BN, then ReLU). No stem: the parameter groups are ``stage1``, ``stage2``, ``head``.

``width`` scales filters and bottleneck, ``depth`` (a multiple of 3) the number of modules:
``create_backbone("inception1d", width=0.25, depth=3)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ecgml.models.base import Backbone, check_kernel, conv1d, scale_channels
from ecgml.models.registry import register_backbone


class InceptionModule1d(nn.Module):
    """Bottleneck -> parallel convs of several kernel sizes, plus a max-pool branch; concat -> BN -> ReLU."""

    def __init__(self, c_in: int, filters: int, kernel_sizes: Sequence[int], bottleneck: int) -> None:
        super().__init__()
        self.bottleneck: nn.Module = conv1d(c_in, bottleneck, 1) if bottleneck > 0 else nn.Identity()
        c_mid = bottleneck if bottleneck > 0 else c_in
        self.convs = nn.ModuleList(conv1d(c_mid, filters, k) for k in kernel_sizes)
        self.pool_branch = nn.Sequential(nn.MaxPool1d(3, stride=1, padding=1), conv1d(c_in, filters, 1))
        self.bn_act = nn.Sequential(nn.BatchNorm1d((len(kernel_sizes) + 1) * filters), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bottled = self.bottleneck(x)
        return self.bn_act(torch.cat([conv(bottled) for conv in self.convs] + [self.pool_branch(x)], dim=1))


class InceptionStage1d(nn.Module):
    """Three inception modules closed by a shortcut: ``relu(modules(x) + bn(conv1x1(x)))`` if residual."""

    def __init__(self, c_in: int, filters: int, kernel_sizes: Sequence[int], bottleneck: int, n_modules: int,
                 residual: bool) -> None:
        super().__init__()
        c_out = (len(kernel_sizes) + 1) * filters
        self.blocks = nn.Sequential(*[InceptionModule1d(c_in if i == 0 else c_out, filters, kernel_sizes,
                                                          bottleneck) for i in range(n_modules)])
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = nn.Sequential(conv1d(c_in, c_out, 1), nn.BatchNorm1d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(x)
        if self.shortcut is None:
            return out
        return self.act(out + self.shortcut(x))


class Inception1d(Backbone):
    """InceptionTime backbone with the concat-pooling head."""

    def __init__(self, *, in_channels: int = 12, num_classes: int = 71, width: float = 1.0, depth: int = 6,
                 filters: int = 32, bottleneck: int = 32, kernel_sizes: Sequence[int] = (39, 19, 9),
                 residual: bool = True, lin_ftrs: Sequence[int] = (128,), ps: float | Sequence[float] = 0.5,
                 bn_head: bool = True, concat_pooling: bool = True) -> None:
        super().__init__(in_channels, num_classes)
        if depth < 3 or depth % 3:
            raise ValueError(f"depth must be a positive multiple of 3 (a shortcut closes every 3 modules), got {depth}")
        kernels = [check_kernel(k, "kernel_sizes") for k in kernel_sizes]
        f = scale_channels(filters, width)
        b = scale_channels(bottleneck, width) if bottleneck > 0 else 0
        c_out = (len(kernels) + 1) * f
        self.stem = None
        self.stages = nn.ModuleList(
            InceptionStage1d(self.in_channels if i == 0 else c_out, f, kernels, b, 3, residual)
            for i in range(depth // 3))
        self._finish(c_out, lin_ftrs=lin_ftrs, ps=ps, bn_head=bn_head, concat_pooling=concat_pooling)


_TINY = {"width": 0.125, "lin_ftrs": [16], "ps": 0.1, "num_classes": 5, "kernel_sizes": [9, 5, 3]}


@register_backbone(tiny=_TINY)
def inception1d(**kwargs: Any) -> Inception1d:
    """InceptionTime as in Strodthoff et al.'s benchmark (depth 6, kernels 39/19/9, 32 filters, bottleneck 32)."""
    return Inception1d(**kwargs)


@register_backbone(tiny=_TINY)
def inception1d_small(**kwargs: Any) -> Inception1d:
    """CPU-sized inception1d (``width=0.25, depth=3``: 8 filters, bottleneck 8, one stage, ~0.03 M parameters)."""
    return Inception1d(**{"width": 0.25, "depth": 3, **kwargs})
