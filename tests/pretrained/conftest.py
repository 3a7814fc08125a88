"""A tiny backbone exported into a temporary folder, as the benchmark exports the real ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecgml.data.leads import STANDARD_LEADS
from ecgml.models import create_backbone
from ecgml.tracking.weights import WeightMetadata, save_weights

CLASSES = ("CD", "HYP", "MI", "NORM", "STTC")


def tiny_weights(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = create_backbone("xresnet1d18", in_channels=12, num_classes=len(CLASSES), width=0.25, layers=[1, 1])
    with torch.no_grad():  # non-trivial batch-norm statistics, so restoring them is tested too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    model.eval()
    metadata = WeightMetadata(
        backbone="xresnet1d18", backbone_kwargs=model.constructor["kwargs"], num_classes=len(CLASSES), fs=100,
        input_samples=250, leads=STANDARD_LEADS, classes=CLASSES, norm_mean=(0.0,) * 12, norm_std=(0.2,) * 12,
        source="ptbxl", dataset_version="1.0.3", cache_digest="test", task="superdiagnostic",
        label_map="challenge", aggregate="mean")
    return save_weights(folder, model, metadata)


def export_tiny(root: Path, name: str = "tiny-superdiagnostic") -> Path:
    from ecgml.pretrained.export import export_pretrained

    return export_pretrained(tiny_weights(root / "run" / "weights"), name,
                             metrics={"val_macro_auc": 0.5, "val_macro_auc_low": 0.4, "val_macro_auc_high": 0.6},
                             command="python benchmarks/real_ptbxl.py --root ROOT --task superdiagnostic",
                             commit="0123456789abcdef", out_dir=root / "shipped", training={"epochs": 1})


@pytest.fixture
def shipped_root(tmp_path: Path) -> Path:
    """A folder of shipped models holding one tiny exported backbone."""
    export_tiny(tmp_path)
    return tmp_path / "shipped"
