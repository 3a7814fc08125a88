"""Regenerates ``reference_outputs.npz``: the eval-mode outputs each registered backbone must reproduce.

The test ``test_reference_outputs`` compares a fresh forward pass with this fixture, so an accidental change of
architecture, initialisation or layer order fails loudly. After an *intended* change, regenerate it on purpose:

    .venv/bin/python -m tests.models.make_reference_outputs            # all registered backbones
    .venv/bin/python -m tests.models.make_reference_outputs NAME ...   # only these (others kept)

For every backbone, at its registered ``tiny`` size, seeded with ``SEED``: ``init`` is the output right after
initialisation (it checks the init scheme, e.g. zero-initialised residual BNs), ``perturbed`` the output after
every BatchNorm got seeded random affine parameters and running statistics measured on a fixed batch (so no
branch is silent and nothing explodes), both on a fixed input drawn with NumPy's PCG64 (stable across NumPy
versions). Names come from the registry, so a new backbone family gets its entry by regenerating.

The outputs are computed in float64 (the float32 initial weights, exactly widened; float64 inputs and
arithmetic), so they hold on any CPU: convolution and BLAS kernels differ between CPUs in the order they sum
in (AVX-512, AVX2 or SSE kernels, oneDNN or not, the thread count), and in float32 that order moved outputs
of the deep XResNets by up to 1e-4 (AVX2 against AVX-512, measured), more than an honest tolerance can allow.
In float64 the same kernels agree to about 1e-14, so ``RTOL``/``ATOL`` sit far above that and far below
what a changed layer does (``test_reference_tolerance`` measures both).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ecgml.models import Backbone, get_backbone_entry, list_backbones

FIXTURE = Path(__file__).with_name("reference_outputs.npz")
SEED = 0
INPUT_SHAPE = (2, 12, 97)  # odd length: exercises the ceil-mode pooling paths
#: The precision of the reference outputs (see the module doc).
DTYPE = torch.float64
#: How close a fresh float64 forward pass must come to its reference (``test_reference_tolerance`` measures
#: kernels differing by ~1e-14 and a changed layer by ~1e-2 or more).
RTOL, ATOL = 1e-7, 1e-9


def reference_input(leads: int = INPUT_SHAPE[1], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The fixed input every reference output is computed on (drawn in float64, then cast to ``dtype``)."""
    shape = (INPUT_SHAPE[0], leads, INPUT_SHAPE[2])
    return torch.from_numpy(np.random.default_rng(20200101).standard_normal(shape)).to(dtype)


def calibration_input(leads: int = INPUT_SHAPE[1], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A larger fixed batch for BN statistics (a batch of 2 gives the head's BatchNorm near-zero variances)."""
    shape = (32, leads, INPUT_SHAPE[2])
    return torch.from_numpy(np.random.default_rng(20200102).standard_normal(shape)).to(dtype)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Tensors a model creates itself in ``forward`` (constants, kernels) take ``dtype`` too."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def perturb_batchnorm(model: Backbone, seed: int = SEED) -> None:
    """Seeded random BN affine parameters (zero-initialised ones included, so no branch is silent), then running
    statistics measured on the reference input, so eval mode is neither a near-identity nor exploding."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.rand(m.num_features, generator=gen, dtype=torch.float32) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=gen, dtype=torch.float32) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass gives the batch statistics
        was_training = model.training
        model.eval()
        for m in bns:
            m.train()
        model(calibration_input(model.in_channels, next(model.parameters()).dtype))
        for m in bns:
            m.momentum = 0.1
        model.train(was_training)


def tiny_model(name: str, seed: int = SEED) -> Backbone:
    """The registered tiny instance of ``name``, initialised under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return get_backbone_entry(name).fn(**get_backbone_entry(name).tiny)


def tiny_kwargs_json(name: str) -> str:
    return json.dumps(dict(get_backbone_entry(name).tiny), sort_keys=True)


def outputs_of(model: Backbone, dtype: torch.dtype = DTYPE) -> dict[str, np.ndarray]:
    """``{"init": ..., "perturbed": ...}`` of ``model`` (changed in place: cast to ``dtype``, BNs perturbed)."""
    model = model.to(dtype).eval()
    x = reference_input(model.in_channels, dtype)
    with torch.no_grad(), default_dtype(dtype):
        init = model(x).numpy()
        perturb_batchnorm(model)
        perturbed = model(x).numpy()
    return {"init": init, "perturbed": perturbed}


def reference_outputs(name: str, dtype: torch.dtype = DTYPE) -> dict[str, np.ndarray]:
    """``{"init": ..., "perturbed": ...}`` for one registered backbone, eval mode, in ``dtype``."""
    return outputs_of(tiny_model(name), dtype)


def main(argv: list[str]) -> int:
    names = argv or list_backbones()
    arrays: dict[str, np.ndarray] = {}
    if argv and FIXTURE.exists():
        with np.load(FIXTURE) as old:
            if "dtype" in old.files and str(old["dtype"]) == str(DTYPE):
                arrays.update({k: old[k] for k in old.files})
            else:  # outputs of another precision are not kept beside these
                names = list_backbones()
                print(f"{FIXTURE.name} holds outputs of another precision: regenerating every backbone in {DTYPE}")
    for name in names:
        for kind, out in reference_outputs(name).items():
            arrays[f"{name}.{kind}"] = out
        arrays[f"{name}.tiny"] = np.array(tiny_kwargs_json(name))
        print(f"{name}: {arrays[f'{name}.init'].shape} outputs, tiny kwargs {tiny_kwargs_json(name)}")
    arrays["torch_version"] = np.array(torch.__version__)
    arrays["dtype"] = np.array(str(DTYPE))
    np.savez_compressed(FIXTURE, **arrays)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
