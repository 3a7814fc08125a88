"""The run's optimizer: torch's AdamW update and state exactly, without importing torch._dynamo."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import torch

from ecgml.train.optim import EagerAdamW, adamw


def _groups(model: torch.nn.Sequential) -> list[dict]:
    return [{"params": list(model[0].parameters()), "lr": 0.01, "weight_decay": 0.01},
            {"params": list(model[2].parameters()), "lr": 0.03, "weight_decay": 0.0}]


def _steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, n: int, seed: int) -> None:
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[0.01, 0.03], total_steps=20)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n):
        optimizer.zero_grad(set_to_none=True)
        model(torch.randn(16, 6, generator=generator)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()


def test_eager_adamw_is_torchs_adamw_bit_for_bit() -> None:
    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    theirs = copy.deepcopy(ours)
    eager, reference = adamw(_groups(ours)), torch.optim.AdamW(_groups(theirs))
    _steps(ours, eager, 6, seed=1)
    _steps(theirs, reference, 6, seed=1)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    # the state_dict is torch's format both ways: a checkpoint of either resumes in the other
    swapped = torch.optim.AdamW(_groups(ours))
    swapped.load_state_dict(eager.state_dict())
    back = EagerAdamW(_groups(theirs))
    back.load_state_dict(reference.state_dict())
    assert str(swapped.state_dict()) == str(reference.state_dict())
    for a, b in zip(swapped.state_dict()["state"].values(), back.state_dict()["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))


def test_training_steps_never_import_dynamo(tmp_path: Path) -> None:
    """torch.optim's own wrappers import torch._dynamo at the first step (2.6 s on 2 cores, issue 24)."""
    script = tmp_path / "steps.py"
    script.write_text(
        "import sys, torch\n"
        "from ecgml.train.optim import adamw\n"
        "model = torch.nn.Linear(4, 2)\n"
        "opt = adamw([{'params': list(model.parameters()), 'lr': 0.1}])\n"
        "for _ in range(3):\n"
        "    opt.zero_grad()\n"
        "    model(torch.randn(8, 4)).sum().backward()\n"
        "    opt.step()\n"
        "opt.load_state_dict(opt.state_dict())\n"
        "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False", out.stderr

