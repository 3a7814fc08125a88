"""The test-time protocol and the layer-wise rates as options: one stride for evaluation and serving, named
protocols, rates per parameter group, and the refusals that come before anything trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecgml.data.leads import STANDARD_LEADS
from ecgml.data.windows import WINDOW_PROTOCOLS, default_stride, protocol_of, window_starts
from ecgml.models import create_backbone, get_backbone_entry
from ecgml.tracking.pyfunc import EcgClassifier
from ecgml.tracking.weights import WeightMetadata, read_metadata, save_weights
from ecgml.train.layer_lr import group_lr_scales
from ecgml.train.loop import OptimConfig, _param_groups


def test_the_2025_protocol_scores_four_disjoint_segments_of_a_10_s_record() -> None:
    aggregate, fraction = WINDOW_PROTOCOLS["mean-disjoint"]
    assert aggregate == "mean"
    assert window_starts(1000, 250, round(250 * fraction)).tolist() == [0, 250, 500, 750]
    assert default_stride(250) == 125 and protocol_of("max", 125, 250) == "max-half"
    assert protocol_of("mean", 250, 250) == "mean-disjoint" and protocol_of("mean", 125, 250) == "custom"


def _weights(tmp_path: Path, aggregate: str, stride: int | None) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_backbone("s4d_small", in_channels=12, num_classes=3, d_model=8, n_layers=1).eval()
    meta = WeightMetadata(backbone="s4d_small", backbone_kwargs=model.constructor["kwargs"], num_classes=3,
                          fs=100, input_samples=250, leads=STANDARD_LEADS,
                          classes=("a", "b", "c"), norm_mean=(0.0,) * 12, norm_std=(1.0,) * 12, source="ptbxl",
                          dataset_version="x", cache_digest="x", task="all", label_map="challenge",
                          aggregate=aggregate, window_stride=stride)
    return save_weights(tmp_path / f"w-{aggregate}-{stride}", model, meta), model


def test_the_served_model_uses_the_stride_and_aggregation_it_was_evaluated_with(tmp_path: Path) -> None:
    signal = np.random.default_rng(0).normal(0, 0.3, (12, 1000)).astype(np.float32)
    folder, model = _weights(tmp_path, "mean", 250)
    assert read_metadata(folder).window_protocol == "mean-disjoint"
    served = EcgClassifier(folder).predict_proba([{"signal": signal, "fs": 100}])
    with torch.no_grad():
        windows = torch.from_numpy(np.stack([signal[:, s:s + 250] for s in (0, 250, 500, 750)]))
        expected = torch.sigmoid(model(windows).double()).mean(0).numpy()
    np.testing.assert_allclose(served[0], expected, rtol=1e-5, atol=1e-7)
    old, _ = _weights(tmp_path, "max", None)  # saved before the stride was stored: half a window, as evaluated
    assert read_metadata(old).stride == 125 and read_metadata(old).window_protocol == "max-half"
    with torch.no_grad():
        windows = torch.from_numpy(np.stack([signal[:, s:s + 250] for s in range(0, 751, 125)]))
        expected = torch.sigmoid(model(windows).double()).amax(0).numpy()
    np.testing.assert_allclose(EcgClassifier(old).predict_proba([{"signal": signal, "fs": 100}])[0], expected,
                               rtol=1e-5, atol=1e-7)


def test_layer_fractions_one_two_or_one_per_group() -> None:
    names = ["stem", "stage1", "stage2", "stage3", "head"]
    assert group_lr_scales(names, [0.1]) == {"stem": 0.1, "stage1": 0.1, "stage2": 0.1, "stage3": 0.1, "head": 1.0}
    spread = group_lr_scales(names, [0.01, 0.1])
    assert spread["stem"] == pytest.approx(0.01) and spread["stage3"] == pytest.approx(0.1)
    assert spread["stage1"] == pytest.approx(0.01 * 10 ** (1 / 3))
    assert group_lr_scales(names, [0.1, 0.2, 0.3, 0.4])["stage3"] == 0.4
    with pytest.raises(ValueError, match=r"--layer-lr-fractions: give 1, 2 or 4 fractions .*stem, stage1"):
        group_lr_scales(names, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"--layer-lr-fractions needs a backbone with parameter groups"):
        group_lr_scales([], [0.1], "a plain module")
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        OptimConfig(layer_lr_fractions=(0.0, 0.1))
    with pytest.raises(ValueError, match="give one of them"):
        OptimConfig(layer_lr_fractions=(0.1,), lr_decay=0.5)


def test_optimizer_groups_follow_the_fractions_and_the_ssm_overrides() -> None:
    model = create_backbone("xresnet1d18", **get_backbone_entry("xresnet1d18").tiny)
    groups = _param_groups(model, 1e-2, 1.0, 1e-2, layer_lr_fractions=(0.01, 0.1))
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["head"] == 1e-2 and lrs["stem"] == pytest.approx(1e-4) and lrs["stage4"] == pytest.approx(1e-3)
    model.unfreeze_last(2)  # a frozen group keeps its place in the spread
    assert {g["name"]: g["lr"] for g in _param_groups(model, 1e-2, 1.0, 1e-2, layer_lr_fractions=(0.01, 0.1))} == {
        "stage4": pytest.approx(1e-3), "head": 1e-2}
    with pytest.raises(ValueError, match="--layer-lr-fractions needs a backbone with parameter groups"):
        _param_groups(torch.nn.Linear(2, 2), 1e-2, 1.0, 1e-2, layer_lr_fractions=(0.1,))

    s4 = create_backbone("s4d", **get_backbone_entry("s4d").tiny)
    groups = _param_groups(s4, 1e-2, 1.0, 1e-2)
    ssm = [g for g in groups if g["weight_decay"] == 0.0]
    assert {g["name"] for g in ssm} == {"stage1", "stage2"} and all(g["lr"] == 1e-3 for g in ssm)
    kernel_ids = {id(p) for stage in s4.stages for p in stage.kernel.parameters()}
    assert {id(p) for g in ssm for p in g["params"]} == kernel_ids
    assert sum(len(g["params"]) for g in groups) == len(list(s4.parameters()))


def test_unset_layer_rates_keep_the_config_digest_of_earlier_runs(tmp_path: Path) -> None:
    from dataclasses import replace

    from ecgml.config import DataConfig, PrepareConfig
    from ecgml.train.pipeline import TrainConfig

    config = TrainConfig(kind="pretrain", data=PrepareConfig(DataConfig(source="ptbxl", root=tmp_path)))
    doc = config.to_json()
    del doc["optim"]["layer_lr_fractions"]
    import hashlib
    import json

    for volatile in ("run_name", "runs_dir", "num_workers", "device_data", "compile_model", "experiment",
                     "register_as", "device"):
        doc.pop(volatile)
    doc["data"].pop("cache_dir")
    doc["data"].pop("workers")
    from ecgml.train.pipeline import TARGET_FIELD_DEFAULTS

    for name, default in TARGET_FIELD_DEFAULTS.items():  # the target settings, left out at their defaults too
        if doc["data"]["data"].get(name) == default:
            doc["data"]["data"].pop(name)
    doc["optim"].pop("keep")
    assert config.digest() == hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    tuned = replace(config, optim=OptimConfig(layer_lr_fractions=[0.01, 0.1]))  # type: ignore[arg-type]
    assert tuned.optim.layer_lr_fractions == (0.01, 0.1) and tuned.digest() != config.digest()
