"""Run names a person can tell apart: descriptive, deterministic, unique among a sweep's runs."""

from __future__ import annotations

from types import SimpleNamespace

from ecgml.experiments.study import StudyConfig, plan_sweep
from ecgml.models import family_of
from ecgml.tracking.run_names import (
    calibration_run_name,
    config_run_name,
    sweep_extras,
    training_params,
    training_run_name,
    unique_names,
)


def test_names_read_like_the_settings() -> None:
    assert training_run_name("finetune", "xresnet1d50_small", fraction=0.025, seed=0) == \
        "finetune xresnet1d50_small f=0.025 s=0"
    assert training_run_name("standalone", "inception1d", fraction=0.25, seed=2) == "standalone inception1d f=0.25 s=2"
    assert training_run_name("pretrain", "xresnet1d50_small", fraction=1.0, seed=0, task="all", fs=100) == \
        "pretrain xresnet1d50_small all 100Hz"
    name = training_run_name("finetune", "x", fraction=1.0, seed=1, fs=500, leads="6", input_domain="fft_real",
                             strategy="linear", extras={"ptbxl": 0.5})
    assert name == "finetune x f=1 500Hz leads=6 fft_real linear ptbxl=0.5 s=1"
    assert training_run_name("finetune", "x", fraction=1.0, seed=1, strategy="gradual") == "finetune x f=1 s=1"
    assert calibration_run_name("finetune x f=0.1 s=0") == "calibrate finetune x f=0.1 s=0"
    # the target is named for fine-tuned and standalone runs, never for pretraining (whose dataset is the source)
    assert training_run_name("finetune", "x", fraction=0.1, seed=0, target="cinc") == "finetune cinc x f=0.1 s=0"
    assert training_run_name("pretrain", "x", fraction=1.0, seed=0, task="all", target="ptbxl") == \
        "pretrain x all 100Hz"


def test_repeats_get_a_number() -> None:
    assert unique_names(["a", "b", "a", "a #2", "a"]) == ["a", "b", "a #2", "a #2 #2", "a #3"]


def _sweep_names(name: str, values: tuple) -> list[str]:
    jobs = plan_sweep(name, StudyConfig(seeds=(0, 1, 2)), values)
    return [config_run_name(j.config, sweep_extras(j.public_setting)) for j in jobs]


def test_every_sweep_names_its_runs_apart_without_help() -> None:
    """The names alone (before unique_names) differ between the siblings of each sweep."""
    for sweep, values in (("fraction", (0.25, 0.025)), ("pretrain-fraction", (1.0, 0.5)), ("leads", ("12", "6")),
                          ("sampling-rate", (100, 500)), ("input-domain", ("time", "fft_real")),
                          ("strategy", ("linear", "gradual")), ("calibration", (1.0, 0.1))):
        names = _sweep_names(sweep, values)
        assert len(set(names)) == len(names), (sweep, names)
    names = _sweep_names("fraction", (0.25, 0.025))
    assert "finetune g12ec xresnet1d50_small f=0.025 s=2" in names  # the default strategy is not named
    assert any(n.startswith("standalone g12ec inception1d_small f=0.25 s=") for n in names), names
    assert names[0] == "pretrain xresnet1d50_small all 100Hz"


def test_params_hold_every_distinguishing_setting() -> None:
    jobs = plan_sweep("fraction", StudyConfig(seeds=(0,)), (0.1,))
    finetune = next(j for j in jobs if j.arm == "finetune")
    params = training_params(finetune.config, family=family_of(finetune.config.model.backbone),
                             lineage={"ecgml.backbone_version": "models:/b/3"})
    for key in ("arm", "family", "backbone", "strategy", "fraction", "fs", "leads", "input_domain", "seed", "lr",
                "weight_decay", "epochs", "crop_s", "label_map", "backbone_version", "target", "target_fraction"):
        assert key in params, key
    assert params["arm"] == "finetune" and params["strategy"] == "gradual"
    assert params["backbone_version"] == "models:/b/3"


def test_config_name_reads_attributes_only() -> None:
    config = SimpleNamespace(kind="standalone", fraction=0.5, seed=3, input_domain="time",
                             model=SimpleNamespace(backbone="resnet1d_wang_small"),
                             data=SimpleNamespace(leads="12", data=SimpleNamespace(task="shared18", fs=100,
                                                                                  source="cinc")),
                             optim=SimpleNamespace(strategy="full"))
    assert config_run_name(config) == "standalone cinc resnet1d_wang_small f=0.5 s=3"
