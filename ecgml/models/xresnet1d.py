"""XResNet1d (fastai's XResNet in 1-D, as in Strodthoff et al. 2020's PTB-XL benchmark; ``xresnet1d101`` is
their best single model).

Architecture: a three-conv stem (in -> 32 -> 32 -> 64, first conv stride 2, kernel 5) and a stride-2 max-pool;
then stages of basic (18/34) or bottleneck (50/101, expansion 4) blocks whose first block in stages 2.. has
stride 2; shortcuts downsample by average pooling before a 1x1 conv ("ResNet-D") and the last BatchNorm of each
residual branch starts at zero, so every block starts as the identity; concat pooling and an MLP head.

Widths: Strodthoff's code keeps **64 channels in every stage** (``[64, 64, 64, 64]``; fastai's 2-D
``[64, 128, 256, 512]`` is commented out there), which is what makes their xresnet1d101 about 1.8 M parameters.
That is the default here; pass ``widths=[64, 128, 256, 512]`` for the fastai widths. ``width`` multiplies
every channel count (stem included) and ``layers`` overrides the block counts, e.g.
``create_backbone("xresnet1d50", width=0.25, layers=[1, 1, 1, 1])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ecgml.models.base import Backbone, check_kernel, conv1d, scale_channels
from ecgml.models.registry import register_backbone

_TINY = {"width": 0.125, "lin_ftrs": [16], "ps": 0.1, "num_classes": 5}


class ConvBnAct(nn.Sequential):
    """conv -> BatchNorm -> ReLU (fastai ConvLayer with bn_1st)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [conv1d(c_in, c_out, kernel_size, stride), nn.BatchNorm1d(c_out)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class XResBlock1d(nn.Module):
    """Residual block: basic (two k-convs) or bottleneck (1x1, k, 1x1), stride on the k-conv;
    shortcut = [AvgPool(2, ceil)] + [1x1 conv + BN if the width changes]."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, kernel_size: int, stride: int, bottleneck: bool) -> None:
        super().__init__()
        if bottleneck:
            convs = [ConvBnAct(c_in, c_mid, 1), ConvBnAct(c_mid, c_mid, kernel_size, stride),
                     ConvBnAct(c_mid, c_out, 1, act=False)]
        else:
            convs = [ConvBnAct(c_in, c_mid, kernel_size, stride), ConvBnAct(c_mid, c_out, kernel_size, act=False)]
        self.convs = nn.Sequential(*convs)
        shortcut: list[nn.Module] = []
        if stride != 1:
            shortcut.append(nn.AvgPool1d(2, ceil_mode=True))
        if c_in != c_out:
            shortcut.append(ConvBnAct(c_in, c_out, 1, act=False))
        self.shortcut = nn.Sequential(*shortcut)
        self.act = nn.ReLU(inplace=True)

    def zero_init_last_bn(self) -> None:
        """Start the residual branch at zero so the block is the identity at initialisation."""
        nn.init.zeros_(self.convs[-1][1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.shortcut(x))


class XResNet1d(Backbone):
    """XResNet1d; ``stem``, ``stage1..N`` and ``head`` are its parameter groups."""

    def __init__(self, *, layers: Sequence[int], bottleneck: bool, in_channels: int = 12, num_classes: int = 71,
                 width: float = 1.0, widths: Sequence[int] | None = None, stem_channels: Sequence[int] = (32, 32, 64),
                 kernel_size: int = 5, kernel_size_stem: int = 5, lin_ftrs: Sequence[int] = (128,),
                 ps: float | Sequence[float] = 0.5, bn_head: bool = True, concat_pooling: bool = True,
                 zero_init_residual: bool = True) -> None:
        super().__init__(in_channels, num_classes)
        layers = [int(n) for n in layers]
        widths = [64] * len(layers) if widths is None else [int(w) for w in widths]
        if not layers or min(layers) < 1 or len(widths) != len(layers):
            raise ValueError(f"layers needs >= 1 block per stage and one width per stage, got {layers}, {widths}")
        if len(stem_channels) < 1:
            raise ValueError("stem_channels needs at least one conv")
        k, k_stem = check_kernel(kernel_size), check_kernel(kernel_size_stem, "kernel_size_stem")
        expansion = 4 if bottleneck else 1

        stem: list[nn.Module] = []
        c = self.in_channels
        for i, s in enumerate(stem_channels):
            stem.append(ConvBnAct(c, scale_channels(s, width), k_stem, stride=2 if i == 0 else 1))
            c = scale_channels(s, width)
        stem.append(nn.MaxPool1d(kernel_size=3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)

        stages = []
        for i, (n_blocks, w) in enumerate(zip(layers, widths, strict=True)):
            mid = scale_channels(w, width)
            out = mid * expansion
            blocks = []
            for j in range(n_blocks):
                blocks.append(XResBlock1d(c, mid, out, k, stride=2 if i > 0 and j == 0 else 1, bottleneck=bottleneck))
                c = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self._finish(c, lin_ftrs=lin_ftrs, ps=ps, bn_head=bn_head, concat_pooling=concat_pooling)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, XResBlock1d):
                    m.zero_init_last_bn()


def _xresnet(layers: Sequence[int], bottleneck: bool, kwargs: dict[str, Any]) -> XResNet1d:
    return XResNet1d(**{"layers": layers, "bottleneck": bottleneck, **kwargs})


@register_backbone(tiny=_TINY)
def xresnet1d18(**kwargs: Any) -> XResNet1d:
    """XResNet1d-18: basic blocks [2, 2, 2, 2]."""
    return _xresnet([2, 2, 2, 2], False, kwargs)


@register_backbone(tiny=_TINY)
def xresnet1d34(**kwargs: Any) -> XResNet1d:
    """XResNet1d-34: basic blocks [3, 4, 6, 3]."""
    return _xresnet([3, 4, 6, 3], False, kwargs)


@register_backbone(tiny=_TINY)
def xresnet1d50(**kwargs: Any) -> XResNet1d:
    """XResNet1d-50: bottleneck blocks [3, 4, 6, 3]."""
    return _xresnet([3, 4, 6, 3], True, kwargs)


@register_backbone(tiny=_TINY)
def xresnet1d101(**kwargs: Any) -> XResNet1d:
    """XResNet1d-101: bottleneck blocks [3, 4, 23, 3], Strodthoff et al.'s best PTB-XL model."""
    return _xresnet([3, 4, 23, 3], True, kwargs)


@register_backbone(tiny=_TINY)
def xresnet1d18_small(**kwargs: Any) -> XResNet1d:
    """CPU-sized XResNet1d-18 (``width=0.5``: stem 16-16-32, 32 channels per stage, ~0.1 M parameters)."""
    return _xresnet([2, 2, 2, 2], False, {"width": 0.5, **kwargs})


@register_backbone(tiny=_TINY)
def xresnet1d50_small(**kwargs: Any) -> XResNet1d:
    """CPU-sized XResNet1d-50 (``width=0.25``: 16 bottleneck channels, 64 out, ~0.08 M parameters)."""
    return _xresnet([3, 4, 6, 3], True, {"width": 0.25, **kwargs})
