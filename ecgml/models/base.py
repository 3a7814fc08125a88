"""The one contract every ecgml backbone follows, so transfer learning is the same code for every family.

A backbone is ``stem -> stages -> global pooling -> head``:

* ``forward_feature_maps(x)`` -> ``[B, C, T']`` (before pooling),
* ``forward_features(x)`` -> ``[B, num_features]`` (pooled: any lead count and length works),
* ``forward_head(features)`` -> ``[B, num_classes]`` logits, ``forward(x)`` = both.

Parameter groups are the stem (if the family has one), ``stage1..stageN`` and ``head``, in order from input to
output; they cover every parameter exactly once. They drive discriminative learning rates, linear probing
(``unfreeze_last(1)``) and gradual unfreezing (``unfreeze_last(2)``, ``unfreeze_last(3)``, ...).

Freezing a group sets ``requires_grad=False`` on its parameters *and* keeps its BatchNorm layers in eval mode
whenever the model is put in train mode, so a frozen group is a fixed function: its running statistics do not
drift towards the new dataset. ``train_bn=True`` gives fastai's ``train_bn`` behaviour instead (what Strodthoff
et al. used when fine-tuning): BatchNorm affine parameters stay trainable and its statistics keep updating.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_BatchNorm = nn.modules.batchnorm._BatchNorm


@dataclass(frozen=True)
class BackboneSpec:
    """Registered entry-function name and the JSON-ready keyword arguments a model was built with."""

    name: str
    kwargs: Mapping[str, Any]


def scale_channels(channels: int, width: float) -> int:
    """Channel count after the width multiplier (at least one channel)."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return max(1, round(channels * width))


def check_kernel(kernel_size: int, what: str = "kernel_size") -> int:
    """Odd kernels only: 'same' padding (k-1)//2 then keeps the length at ceil(L / stride)."""
    k = int(kernel_size)
    if k < 1 or k % 2 == 0 or k != kernel_size:
        raise ValueError(f"{what} must be a positive odd integer, got {kernel_size!r}")
    return k


def conv1d(c_in: int, c_out: int, kernel_size: int, stride: int = 1, bias: bool = False) -> nn.Conv1d:
    """1-D convolution with 'same' padding for odd kernels (no bias: a BatchNorm follows)."""
    return nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=bias)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal conv/linear weights, zero biases, BN weight 1 and bias 0.

    This is what the benchmark's models got in effect (fastai ``init_cnn`` / Strodthoff's ``weight_init``).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (optionally only those that require grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class GlobalPool1d(nn.Module):
    """Global pooling over time: concat of max and mean (fastai's AdaptiveConcatPool1d order) or mean only."""

    def __init__(self, concat: bool = True) -> None:
        super().__init__()
        self.concat = concat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1)
        if not self.concat:
            return mean
        return torch.cat([x.amax(dim=-1), mean], dim=1)

    def extra_repr(self) -> str:
        return f"concat={self.concat}"


def _dropouts(ps: float | Sequence[float], n_linear: int) -> list[float]:
    """fastai's rule: one number p means p/2 before every hidden Linear and p before the last one."""
    if isinstance(ps, int | float):
        return [float(ps) / 2] * (n_linear - 1) + [float(ps)]
    values = [float(p) for p in ps]
    if len(values) != n_linear:
        raise ValueError(f"ps needs one dropout per Linear ({n_linear}), got {len(values)}")
    return values


class ClassifierHead(nn.Module):
    """Strodthoff's ``create_head1d`` after pooling: ``[BN -> Dropout -> Linear -> ReLU]`` per hidden size in
    ``lin_ftrs``, then ``BN -> Dropout -> fc``. ``fc`` is the layer that transfer learning replaces."""

    def __init__(self, in_features: int, num_classes: int, lin_ftrs: Sequence[int] = (128,),
                 ps: float | Sequence[float] = 0.5, bn: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        sizes = [int(in_features), *(int(n) for n in lin_ftrs), int(num_classes)]
        drops = _dropouts(ps, len(sizes) - 1)
        layers: list[nn.Module] = []
        for i, p in enumerate(drops):
            if bn:
                layers.append(nn.BatchNorm1d(sizes[i]))
            if p > 0:
                layers.append(nn.Dropout(p))
            if i < len(drops) - 1:
                layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU(inplace=True)]
        self.hidden = nn.Sequential(*layers)
        self.fc = nn.Linear(sizes[-2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(x))


class Backbone(nn.Module):
    """Base class of every registered model: ``stem`` (or None), ``stages`` (a ModuleList), ``pool``, ``head``.

    Subclasses build ``stem`` and ``stages`` and call :meth:`_finish` with the channel count of the last stage;
    everything else (pooling, head, groups, freezing, constructor record) lives here.
    """

    stem: nn.Module | None
    stages: nn.ModuleList
    pool: GlobalPool1d
    head: ClassifierHead

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.num_features = 0
        self._head_cfg: dict[str, Any] = {}
        self._frozen: dict[str, bool] = {}  # frozen group -> train_bn
        self._spec: BackboneSpec | None = None

    def _finish(self, out_channels: int, *, lin_ftrs: Sequence[int], ps: float | Sequence[float], bn_head: bool,
                concat_pooling: bool) -> None:
        """Adds global pooling and the head after the stages, then initialises every weight."""
        self.pool = GlobalPool1d(concat_pooling)
        self.num_features = out_channels * (2 if concat_pooling else 1)
        self._head_cfg = {"lin_ftrs": tuple(int(n) for n in lin_ftrs),
                          "ps": ps if isinstance(ps, int | float) else tuple(ps), "bn": bool(bn_head)}
        self.head = ClassifierHead(self.num_features, self.num_classes, **self._head_cfg)
        init_weights(self)

    # forward ---------------------------------------------------------------------------------------------------
    def forward_feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """``float32[B, leads, samples]`` -> ``[B, C, T']`` before global pooling."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a tensor [batch, {self.in_channels} leads, samples], got {tuple(x.shape)}")
        if self.stem is not None:
            x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def check_input(self, leads: int, samples: int) -> None:
        """Refuses, before anything trains, windows of ``leads`` x ``samples`` this model cannot take (a family
        with limits of its own, e.g. a maximum length, adds them); the message names the options to change."""
        if leads != self.in_channels:
            raise ValueError(f"{type(self).__name__} was built for {self.in_channels} leads, not {leads}: pick "
                             f"--leads to match, or build the backbone for {leads} leads")
        if samples < 1:
            raise ValueError(f"a window needs at least one sample, not {samples}: raise --crop-s or --fs")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, num_features]``: what a new head sees after transfer."""
        return self.pool(self.forward_feature_maps(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` from pooled features."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # transfer --------------------------------------------------------------------------------------------------
    def reset_classifier(self, num_classes: int, *, reset_hidden: bool = False) -> None:
        """Fresh output layer for ``num_classes`` (Strodthoff's fine-tuning swaps only ``head.fc``);
        ``reset_hidden=True`` re-initialises the whole head. Features are untouched. New parameters follow the
        head group's current freeze state."""
        old = self.head.fc.weight
        if reset_hidden:
            new_head = ClassifierHead(self.num_features, num_classes, **self._head_cfg)
            init_weights(new_head)
            self.head = new_head.to(device=old.device, dtype=old.dtype)
        else:
            fc = nn.Linear(self.head.fc.in_features, num_classes)
            init_weights(fc)
            self.head.fc = fc.to(device=old.device, dtype=old.dtype)
        self.num_classes = int(num_classes)
        self._apply_freeze()

    # parameter groups ------------------------------------------------------------------------------------------
    def group_modules(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` per parameter group, input to output."""
        groups: list[tuple[str, nn.Module]] = []
        if self.stem is not None:
            groups.append(("stem", self.stem))
        groups += [(f"stage{i}", stage) for i, stage in enumerate(self.stages, start=1)]
        groups.append(("head", self.head))
        return groups

    @property
    def group_names(self) -> list[str]:
        return [name for name, _ in self.group_modules()]

    def parameter_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """``(name, parameters)`` per group, input to output; every parameter appears exactly once."""
        groups = [(name, list(module.parameters())) for name, module in self.group_modules()]
        ids = [id(p) for _, params in groups for p in params]
        if len(ids) != len(set(ids)) or set(ids) != {id(p) for p in self.parameters()}:
            raise RuntimeError(f"{type(self).__name__}: parameter groups do not cover every parameter exactly once")
        return groups

    def _group_list(self, groups: str | Iterable[str] | None) -> list[str]:
        names = self.group_names
        if groups is None:
            return names
        wanted = [groups] if isinstance(groups, str) else list(groups)
        unknown = [g for g in wanted if g not in names]
        if unknown:
            raise ValueError(f"unknown parameter group(s) {unknown}; this model has {names}")
        return wanted

    @property
    def frozen_groups(self) -> list[str]:
        return [name for name in self.group_names if name in self._frozen]

    def freeze(self, groups: str | Iterable[str] | None = None, *, train_bn: bool = False) -> None:
        """Freezes the named groups (all if None): no gradients, BatchNorm kept in eval mode unless ``train_bn``."""
        for name in self._group_list(groups):
            self._frozen[name] = train_bn
        self._apply_freeze()

    def unfreeze(self, groups: str | Iterable[str] | None = None) -> None:
        """Makes the named groups (all if None) trainable again."""
        for name in self._group_list(groups):
            self._frozen.pop(name, None)
        self._apply_freeze()

    def unfreeze_last(self, n: int, *, train_bn: bool = False) -> None:
        """Trains only the last ``n`` groups: 1 = linear probe of the head, then one more stage per step."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        names = self.group_names
        cut = max(len(names) - n, 0)
        self._frozen = {name: train_bn for name in names[:cut]}
        self._apply_freeze()

    def _apply_freeze(self) -> None:
        for name, module in self.group_modules():
            frozen = name in self._frozen
            for p in module.parameters():
                p.requires_grad_(not frozen)
            if frozen and self._frozen[name]:
                for m in module.modules():
                    if isinstance(m, _BatchNorm):
                        for p in m.parameters():
                            p.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """As nn.Module.train, but BatchNorm in frozen groups (without ``train_bn``) stays in eval mode."""
        super().train(mode)
        if mode:
            for name, module in self.group_modules():
                if name in self._frozen and not self._frozen[name]:
                    for m in module.modules():
                        if isinstance(m, _BatchNorm):
                            m.eval()
        return self

    # weights metadata ------------------------------------------------------------------------------------------
    def _set_constructor(self, spec: BackboneSpec) -> None:
        self._spec = spec

    @property
    def constructor(self) -> dict[str, Any]:
        """``{"name": ..., "kwargs": {...}}`` (JSON-ready) that rebuilds this architecture with
        :func:`ecgml.models.rebuild_backbone`; ``num_classes`` follows :meth:`reset_classifier`."""
        if self._spec is None:
            raise RuntimeError(f"this {type(self).__name__} was not built by a registered entry function, so its "
                               "constructor is unknown; build it with ecgml.models.create_backbone(name, ...)")
        kwargs = copy.deepcopy(dict(self._spec.kwargs))
        kwargs["num_classes"] = self.num_classes
        return {"name": self._spec.name, "kwargs": kwargs}
