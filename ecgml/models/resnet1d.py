"""ResNet of Wang et al. 2017 ("Time series classification from scratch with deep neural networks") in the
form of Strodthoff et al.'s ``resnet1d_wang``: a stride-1 stem conv (kernel 7, 128 filters, no pooling), three
stages of one basic block each (kernels 5 and 3, 128 filters throughout, stride 2 from stage 2 on, 1x1-conv
shortcuts where the shape changes) and the concat-pooling MLP head.

``width`` scales the 128 filters, ``layers`` the blocks per stage:
``create_backbone("resnet1d_wang", width=0.25)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ecgml.models.base import Backbone, check_kernel, conv1d, scale_channels
from ecgml.models.registry import register_backbone

_TINY = {"width": 0.0625, "lin_ftrs": [16], "ps": 0.1, "num_classes": 5}


class BasicBlock1d(nn.Module):
    """conv(k0, stride) -> BN -> ReLU -> conv(k1) -> BN, plus the (1x1 conv + BN if needed) shortcut, -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel_sizes: tuple[int, int], stride: int) -> None:
        super().__init__()
        self.conv1 = conv1d(c_in, c_out, kernel_sizes[0], stride)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = conv1d(c_out, c_out, kernel_sizes[1])
        self.bn2 = nn.BatchNorm1d(c_out)
        self.act = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet1d(Backbone):
    """Plain 1-D ResNet with a constant number of filters; ``stem``, ``stage1..N``, ``head`` groups."""

    def __init__(self, *, layers: Sequence[int] = (1, 1, 1), in_channels: int = 12, num_classes: int = 71,
                 width: float = 1.0, filters: int = 128, kernel_size: int | Sequence[int] = (5, 3),
                 kernel_size_stem: int = 7, stride_stem: int = 1, pool_stem: bool = False,
                 lin_ftrs: Sequence[int] = (128,), ps: float | Sequence[float] = 0.5, bn_head: bool = True,
                 concat_pooling: bool = True) -> None:
        super().__init__(in_channels, num_classes)
        layers = [int(n) for n in layers]
        if not layers or min(layers) < 1:
            raise ValueError(f"layers needs >= 1 block per stage, got {layers}")
        ks = [kernel_size, kernel_size] if isinstance(kernel_size, int) else list(kernel_size)
        if len(ks) != 2:
            raise ValueError(f"kernel_size is one odd int or a pair of them, got {kernel_size!r}")
        kernels = (check_kernel(ks[0]), check_kernel(ks[1]))
        c = scale_channels(filters, width)

        stem: list[nn.Module] = [conv1d(self.in_channels, c, check_kernel(kernel_size_stem, "kernel_size_stem"),
                                        stride_stem), nn.BatchNorm1d(c), nn.ReLU(inplace=True)]
        if pool_stem:
            stem.append(nn.MaxPool1d(kernel_size=3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)
        self.stages = nn.ModuleList(
            nn.Sequential(*[BasicBlock1d(c, c, kernels, stride=2 if i > 0 and j == 0 else 1) for j in range(n)])
            for i, n in enumerate(layers))
        self._finish(c, lin_ftrs=lin_ftrs, ps=ps, bn_head=bn_head, concat_pooling=concat_pooling)


@register_backbone(tiny=_TINY)
def resnet1d_wang(**kwargs: Any) -> ResNet1d:
    """Wang et al. 2017's ResNet as in Strodthoff et al.'s benchmark (128 filters, kernels [5, 3], [1, 1, 1])."""
    return ResNet1d(**kwargs)


@register_backbone(tiny=_TINY)
def resnet1d_wang_small(**kwargs: Any) -> ResNet1d:
    """CPU-sized resnet1d_wang (``width=0.25``: 32 filters, ~0.04 M parameters)."""
    return ResNet1d(**{"width": 0.25, **kwargs})
