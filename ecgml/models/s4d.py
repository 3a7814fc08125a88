"""S4D: diagonal structured state-space layers (Gu et al. 2022, "On the parameterization and initialization of
diagonal state space models"), bidirectional, as the S4 ECG models of Strodthoff and colleagues use them.

Each layer holds, per channel ``h`` of ``d_model``, a diagonal complex state matrix ``A`` (``d_state / 2`` conjugate
pairs, S4D-Lin initialisation ``A_n = -1/2 + i*pi*n``), an output vector ``C`` (one per direction), a step size
``dt`` (log-uniform in ``[dt_min, dt_max]``) and a skip ``D``. Discretised with zero-order hold, the layer is a
long convolution with the kernel ``K[l] = 2 Re(sum_n C_n (exp(dt A_n) - 1) / A_n * exp(dt A_n l))`` (a Vandermonde
product), applied with an FFT of length ``2L``. Bidirectional: a second kernel runs over the reversed sequence
(computed as one anti-causal kernel beside the causal one, so both directions cost one FFT). The kernel and the
FFT convolution always run in float32, under autocast too: a float16 kernel overflows for slow-decaying modes.

Block (postnorm by default, as the published model): ``x + Dropout(GLU(W (Dropout(GELU(K * x + D x)))))`` then
BatchNorm (``norm="layer"``: LayerNorm over channels; ``prenorm=True`` normalises before the layer instead).

Model: a 1x1 convolution encoder (``stem``), ``n_layers`` blocks (one parameter group each: ``stage1..N``), global
pooling over time (mean, as the published model; ``concat_pooling=True`` for max+mean) and the head. The
published size (``s4d``: d_model 512, d_state 8, 4 layers, ~2.2 M parameters with 71 classes) is a GPU model;
``s4d_small`` is the CPU size (see ``docs/backbones.md`` for how it was chosen).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ecgml.models.base import Backbone
from ecgml.models.registry import register_backbone

#: Largest finite float16 value: a kernel beyond it cannot be represented in half precision.
FLOAT16_MAX = 65504.0
NORMS = ("batch", "layer")


class S4DKernel(nn.Module):
    """The diagonal SSM's convolution kernel(s) ``float32[directions, d_model, L]`` for any length ``L``.

    ``optim_overrides``: the state-space parameters (``log_dt``, ``A``) train at a capped learning rate without
    weight decay, as in the S4 papers; the training loop applies it to this module's own parameters.
    """

    optim_overrides: ClassVar[dict[str, float]] = {"lr": 1e-3, "weight_decay": 0.0}

    def __init__(self, d_model: int, d_state: int, directions: int, dt_min: float, dt_max: float) -> None:
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be an even number >= 2 (conjugate pairs), got {d_state}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        half = d_state // 2
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_a_real = nn.Parameter(torch.log(torch.full((d_model, half), 0.5)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(half, dtype=torch.float32).repeat(d_model, 1))
        self.c = nn.Parameter(torch.view_as_real(torch.randn(directions, d_model, half, dtype=torch.cfloat)))

    def forward(self, length: int) -> torch.Tensor:
        with torch.autocast(device_type=self.log_dt.device.type, enabled=False):
            dt = self.log_dt.float().exp()                                        # [H]
            a = torch.complex(-self.log_a_real.float().exp(), self.a_imag.float())  # [H, N/2]
            dt_a = a * dt[:, None]
            c = torch.view_as_complex(self.c.float().contiguous()) * (torch.exp(dt_a) - 1.0) / a  # ZOH
            steps = torch.arange(length, device=a.device, dtype=torch.float32)
            vandermonde = torch.exp(dt_a[:, :, None] * steps)                     # [H, N/2, L]
            kernel = 2 * torch.einsum("dhn,hnl->dhl", c, vandermonde).real
        if not torch.isfinite(kernel).all():
            raise FloatingPointError(f"S4D kernel of length {length} is not finite (log_dt or A diverged); lower "
                                     "--lr or train in float32")
        return kernel


def fft_convolution(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``u[B, H, L]`` convolved with one causal kernel ``[1, H, L]`` or a causal and an anti-causal one
    ``[2, H, L]``, in float32 with FFTs of length ``2L`` (no wrap-around)."""
    length = u.shape[-1]
    if kernel.shape[0] == 2:  # the backward kernel k1 acts on the future: y[t] += sum_{s>t} k1[s-t-1] u[s]
        k = F.pad(kernel[0], (0, length)) + F.pad(kernel[1].flip(-1), (length, 0))
    else:
        k = F.pad(kernel[0], (0, length))
    with torch.autocast(device_type=u.device.type, enabled=False):
        spectrum = torch.fft.rfft(u.float(), n=2 * length) * torch.fft.rfft(k, n=2 * length)
        return torch.fft.irfft(spectrum, n=2 * length)[..., :length]


class ChannelNorm(nn.Module):
    """BatchNorm1d or LayerNorm over the channels of ``[B, H, L]``."""

    def __init__(self, d_model: int, kind: str) -> None:
        super().__init__()
        if kind not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")
        self.kind = kind
        self.norm: nn.Module = nn.BatchNorm1d(d_model) if kind == "batch" else nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "batch":
            return self.norm(x)
        return self.norm(x.transpose(-1, -2)).transpose(-1, -2)


class S4DBlock(nn.Module):
    """One residual S4D layer on ``[B, d_model, L]``: SSM convolution + D skip, GELU, dropout, 1x1 conv to
    ``2 d_model`` and GLU, dropout, residual, norm (after by default, before with ``prenorm``)."""

    def __init__(self, d_model: int, d_state: int, *, bidirectional: bool, dropout: float, prenorm: bool,
                 norm: str, dt_min: float, dt_max: float) -> None:
        super().__init__()
        self.prenorm = prenorm
        self.kernel = S4DKernel(d_model, d_state, 2 if bidirectional else 1, dt_min, dt_max)
        self.skip = nn.Parameter(torch.randn(d_model))
        self.inner_dropout = nn.Dropout(dropout)
        self.output = nn.Conv1d(d_model, 2 * d_model, 1)
        self.dropout = nn.Dropout1d(dropout)
        self.norm = ChannelNorm(d_model, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x) if self.prenorm else x
        y = fft_convolution(z, self.kernel(z.shape[-1])) + z.float() * self.skip.float()[:, None]
        y = self.inner_dropout(F.gelu(y)).to(x.dtype)
        y = self.dropout(F.glu(self.output(y), dim=1))
        x = x + y
        return x if self.prenorm else self.norm(x)


class S4D(Backbone):
    """Bidirectional S4D backbone: ``stem`` (1x1 conv encoder), ``stage1..N`` (one S4D block each), ``head``."""

    def __init__(self, *, in_channels: int = 12, num_classes: int = 71, d_model: int = 512, d_state: int = 8,
                 n_layers: int = 4, bidirectional: bool = True, dropout: float = 0.2, prenorm: bool = False,
                 norm: str = "batch", dt_min: float = 1e-3, dt_max: float = 1e-1, l_max: int | None = None,
                 lin_ftrs: Sequence[int] = (), ps: float | Sequence[float] = 0.0, bn_head: bool = False,
                 concat_pooling: bool = False) -> None:
        super().__init__(in_channels, num_classes)
        if d_model < 1 or n_layers < 1:
            raise ValueError(f"d_model and n_layers must be >= 1, got d_model={d_model}, n_layers={n_layers}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if l_max is not None and l_max < 1:
            raise ValueError(f"l_max must be >= 1 (or null for any length), got {l_max}")
        self.l_max = l_max
        self.stem = nn.Conv1d(self.in_channels, d_model, 1)
        self.stages = nn.ModuleList(
            S4DBlock(d_model, d_state, bidirectional=bidirectional, dropout=dropout, prenorm=prenorm, norm=norm,
                     dt_min=dt_min, dt_max=dt_max) for _ in range(n_layers))
        self._finish(d_model, lin_ftrs=lin_ftrs, ps=ps, bn_head=bn_head, concat_pooling=concat_pooling)

    def check_input(self, leads: int, samples: int) -> None:
        """Refuses a window the model cannot take: the base checks, and more samples than ``l_max``."""
        super().check_input(leads, samples)
        self._check_length(samples)

    def _check_length(self, samples: int) -> None:
        if self.l_max is not None and samples > self.l_max:
            raise ValueError(f"this S4D takes at most l_max={self.l_max} samples per window, not {samples}: "
                             "shorten the window (--crop-s) or the rate (--fs), or raise l_max in --backbone-kwargs")

    def forward_feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        self._check_length(x.shape[-1])
        return super().forward_feature_maps(x)


_TINY = {"d_model": 16, "d_state": 4, "n_layers": 2, "lin_ftrs": [16], "ps": 0.1, "bn_head": True,
         "dropout": 0.1, "num_classes": 5}


@register_backbone(tiny=_TINY)
def s4d(**kwargs: Any) -> S4D:
    """Bidirectional S4D at the published ECG size (d_model 512, d_state 8, 4 layers, ~2.2 M parameters): GPUs."""
    return S4D(**kwargs)


@register_backbone(tiny=_TINY)
def s4d_small(**kwargs: Any) -> S4D:
    """CPU-sized bidirectional S4D (d_model 64, d_state 8, 4 layers, ~0.04 M parameters)."""
    return S4D(**{"d_model": 64, **kwargs})
