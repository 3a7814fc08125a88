"""Regenerates ``reference_outputs.npz``: the eval-mode outputs each registered backbone must reproduce.

The test ``test_reference_outputs`` compares a fresh forward pass with this fixture, so an accidental change of
architecture, initialisation or layer order fails loudly. After an *intended* change, regenerate it on purpose:

    .venv/bin/python -m tests.models.make_reference_outputs            # all registered backbones
    .venv/bin/python -m tests.models.make_reference_outputs NAME ...   # only these (others kept)

For every backbone, at its registered ``tiny`` size, seeded with ``SEED``: ``init`` is the output right after
initialisation (it checks the init scheme, e.g. zero-initialised residual BNs), ``perturbed`` the output after
every BatchNorm got seeded random affine parameters and running statistics measured on a fixed batch (so no
branch is silent and nothing explodes), both on a
fixed input drawn with NumPy's PCG64 (stable across NumPy versions).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ecgml.models import Backbone, get_backbone_entry, list_backbones

FIXTURE = Path(__file__).with_name("reference_outputs.npz")
SEED = 0
INPUT_SHAPE = (2, 12, 97)  # odd length: exercises the ceil-mode pooling paths


def reference_input(leads: int = INPUT_SHAPE[1]) -> torch.Tensor:
    """The fixed input every reference output is computed on."""
    shape = (INPUT_SHAPE[0], leads, INPUT_SHAPE[2])
    return torch.from_numpy(np.random.default_rng(20200101).standard_normal(shape).astype(np.float32))


def calibration_input(leads: int = INPUT_SHAPE[1]) -> torch.Tensor:
    """A larger fixed batch for BN statistics (a batch of 2 gives the head's BatchNorm near-zero variances)."""
    shape = (32, leads, INPUT_SHAPE[2])
    return torch.from_numpy(np.random.default_rng(20200102).standard_normal(shape).astype(np.float32))


def perturb_batchnorm(model: Backbone, seed: int = SEED) -> None:
    """Seeded random BN affine parameters (zero-initialised ones included, so no branch is silent), then running
    statistics measured on the reference input, so eval mode is neither a near-identity nor exploding."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass gives the batch statistics
        was_training = model.training
        model.eval()
        for m in bns:
            m.train()
        model(calibration_input(model.in_channels))
        for m in bns:
            m.momentum = 0.1
        model.train(was_training)


def tiny_model(name: str, seed: int = SEED) -> Backbone:
    """The registered tiny instance of ``name``, initialised under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return get_backbone_entry(name).fn(**get_backbone_entry(name).tiny)


def tiny_kwargs_json(name: str) -> str:
    return json.dumps(dict(get_backbone_entry(name).tiny), sort_keys=True)


def reference_outputs(name: str) -> dict[str, np.ndarray]:
    """``{"init": ..., "perturbed": ...}`` for one backbone, eval mode."""
    model = tiny_model(name).eval()
    x = reference_input()
    with torch.no_grad():
        init = model(x).numpy()
        perturb_batchnorm(model)
        perturbed = model(x).numpy()
    return {"init": init, "perturbed": perturbed}


def main(argv: list[str]) -> int:
    names = argv or list_backbones()
    arrays: dict[str, np.ndarray] = {}
    if argv and FIXTURE.exists():
        with np.load(FIXTURE) as old:
            arrays.update({k: old[k] for k in old.files})
    for name in names:
        for kind, out in reference_outputs(name).items():
            arrays[f"{name}.{kind}"] = out
        arrays[f"{name}.tiny"] = np.array(tiny_kwargs_json(name))
        print(f"{name}: {arrays[f'{name}.init'].shape} outputs, tiny kwargs {tiny_kwargs_json(name)}")
    arrays["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(FIXTURE, **arrays)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
