"""The S4D family's own facts: the kernel is the ZOH-discretised diagonal SSM, the FFT convolution is the
causal plus anti-causal sum it stands for, the kernel stays float32 under autocast, bad input is refused
with the option to change, and the published size matches the S4 ECG model (~2.2 M parameters)."""

from __future__ import annotations

import pytest
import torch

from ecgml.models import count_parameters, create_backbone
from ecgml.models.s4d import FLOAT16_MAX, S4DKernel, fft_convolution


def _kernel(directions: int = 2, d_model: int = 3, d_state: int = 4) -> S4DKernel:
    torch.manual_seed(0)
    return S4DKernel(d_model, d_state, directions, dt_min=1e-2, dt_max=1e-1)


def test_kernel_is_the_impulse_response_of_the_discretised_recurrence() -> None:
    kernel = _kernel(directions=1)
    length = 12
    with torch.no_grad():
        k = kernel(length)[0].double()
        dt = kernel.log_dt.exp().double()
        a = torch.complex(-kernel.log_a_real.exp(), kernel.a_imag).to(torch.cdouble)
        a_bar = torch.exp(a * dt[:, None])                     # zero-order hold
        b_bar = (a_bar - 1) / a
        c = torch.view_as_complex(kernel.c[0].contiguous()).to(torch.cdouble)
        state = torch.zeros_like(a)
        response = []
        for step in range(length):                             # impulse at step 0
            state = a_bar * state + (b_bar if step == 0 else 0)
            response.append(2 * (c * state).sum(-1).real)
    torch.testing.assert_close(k, torch.stack(response, dim=-1), rtol=1e-5, atol=1e-6)


def test_fft_convolution_is_the_causal_and_anticausal_sum() -> None:
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(2, 3, 9, generator=gen)
    kernel = torch.randn(2, 3, 9, generator=gen)
    expected = torch.zeros_like(u)
    for t in range(9):
        for s in range(9):
            if s <= t:
                expected[..., t] += kernel[0, :, t - s] * u[..., s]
            else:  # the backward direction: the causal kernel k1 run over the reversed sequence
                expected[..., t] += kernel[1, :, s - t - 1] * u[..., s]
    torch.testing.assert_close(fft_convolution(u, kernel), expected, rtol=1e-4, atol=1e-5)
    # the same as a causal pass plus a second causal pass over the reversed sequence (kernel delayed by one)
    delayed = torch.cat([torch.zeros(3, 1), kernel[1, :, :-1]], dim=-1)[None]
    two_passes = fft_convolution(u, kernel[:1]) + fft_convolution(u.flip(-1), delayed).flip(-1)
    torch.testing.assert_close(two_passes, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_and_convolution_stay_float32_under_autocast(dtype: torch.dtype) -> None:
    kernel = _kernel()
    with torch.no_grad():
        kernel.c.mul_(1e7)  # a kernel far beyond float16's range
        plain = kernel(50)
        with torch.autocast("cpu", dtype=dtype):
            cast = kernel(50)
            y = fft_convolution(torch.randn(1, 3, 50, dtype=dtype), cast)
    assert cast.dtype == torch.float32 and y.dtype == torch.float32
    assert cast.abs().max() > FLOAT16_MAX and torch.isfinite(cast).all()
    torch.testing.assert_close(cast, plain)


def test_a_diverged_kernel_is_a_clear_error() -> None:
    kernel = _kernel()
    with torch.no_grad():
        kernel.log_a_real.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"not finite.*--lr"):
        kernel(10)


def test_bad_input_names_the_option() -> None:
    model = create_backbone("s4d_small", l_max=250, num_classes=5)
    model.check_input(12, 250)
    with pytest.raises(ValueError, match=r"l_max=250.*--crop-s.*--fs"):
        model.check_input(12, 500)
    with pytest.raises(ValueError, match="l_max=250"):
        model(torch.randn(1, 12, 251))
    with pytest.raises(ValueError, match=r"12 leads, not 3.*--leads"):
        model.check_input(3, 250)
    with pytest.raises(ValueError, match="even"):
        create_backbone("s4d_small", d_state=5)
    with pytest.raises(ValueError, match="norm must be one of batch, layer"):
        create_backbone("s4d_small", norm="group")


def test_published_size_and_layout() -> None:
    model = create_backbone("s4d")  # d_model 512, d_state 8, 4 bidirectional layers, 71 classes
    assert 2.1e6 < count_parameters(model) < 2.3e6
    assert model.group_names == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert model.stages[0].kernel.c.shape == (2, 512, 4, 2)  # two directions, d_state/2 complex modes
    assert model.num_features == 512 and list(model.head.hidden) == []  # mean pooling, linear decoder
    small = create_backbone("s4d_small", num_classes=5)
    assert small.stages[0].kernel.log_dt.shape == (64,)


@pytest.mark.parametrize("norm,prenorm", [("layer", False), ("layer", True), ("batch", True)])
def test_norm_variants_train_and_transfer(norm: str, prenorm: bool) -> None:
    torch.manual_seed(0)
    model = create_backbone("s4d", d_model=8, d_state=4, n_layers=2, num_classes=3, norm=norm, prenorm=prenorm)
    x = torch.randn(4, 12, 40)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.reset_classifier(2)
    model.unfreeze_last(2)
    assert [g for g, ps in model.parameter_groups() if all(p.requires_grad for p in ps)] == ["stage2", "head"]
    assert model.eval()(x).shape == (4, 2)
