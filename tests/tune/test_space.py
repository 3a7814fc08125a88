"""The search space: defaults, narrowing from the command line, every bad input named, sampling in bounds, and the
parameters landing in the right field of the training config."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgml.config import DataConfig, PrepareConfig
from ecgml.train.pipeline import TrainConfig
from ecgml.tune.space import Choice, FloatRange, SearchSpace, SpaceError, apply_params, parse_overrides
from ecgml.tune.spec import TuneSpec, config_from_json


def _base(seconds: float = 10.0) -> TrainConfig:
    data = PrepareConfig(DataConfig(source="ptbxl", root=Path("/data/ptbxl"), task="superdiagnostic"), seconds=seconds,
                         cache_dir=Path("/data/cache"))
    return TrainConfig(kind="pretrain", data=data, runs_dir=Path("/data/runs"))


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_default_spaces_validate(stage: str) -> None:
    space = SearchSpace.default(stage)  # type: ignore[arg-type]
    space.validate()
    assert {"lr", "weight_decay", "batch_size", "aggregate"} <= set(space.searched)
    if stage == "pretrain":
        assert {"dropout", "backbone", "width", "crop_s"} <= set(space.searched)
    else:
        assert {"strategy", "lr_decay"} <= set(space.searched) and "backbone" not in dict(space.dims)


def test_narrowing_parses_ranges_choices_and_fixed_values() -> None:
    space = SearchSpace.default("pretrain").narrowed(parse_overrides(
        ["lr=1e-3:1e-2", "dropout=0.1:0.3:log", "backbone=xresnet1d18,inception1d", "batch_size=16", "crop_s=1.25"]))
    dims = dict(space.dims)
    assert dims["lr"] == FloatRange(1e-3, 1e-2, log=True)  # keeps the default's log scale
    assert dims["dropout"] == FloatRange(0.1, 0.3, log=True)
    assert dims["backbone"] == Choice(("xresnet1d18", "inception1d"))
    assert "batch_size" not in space.searched and "crop_s" not in space.searched
    space.validate()
    assert SearchSpace.from_json(space.to_json()) == space


@pytest.mark.parametrize(("overrides", "message"), [
    (["lr=1e-2:1e-3"], "lr: range low 0.01 > high 0.001"),
    (["lr=0:1e-2"], "a log range needs low > 0"),
    (["backbone="], "backbone: the list of values is empty"),
    (["backbone=resnet9000"], "unknown backbone 'resnet9000'"),
    (["batch_size=16:64"], "batch_size takes a list of values"),
    (["batch_size=0,16"], "batch_size=0: must be >= 1"),
    (["batch_size=a,b"], "batch_size: 'a' is not an integer"),
    (["aggregate=sum,max"], "aggregate=sum: must be max or mean"),
    (["dropout=0.2:1.5"], "dropout=1.5: must be in [0, 1)"),
    (["momentum=0.9"], "unknown parameter 'momentum'"),
    (["strategy=full,linear"], "strategy is not tunable when the stage is pretrain"),
    (["lr"], "is not NAME=SPEC"),
    (["lr=1e-3", "lr=1e-2"], "gives lr twice"),
])
def test_bad_spaces_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(SpaceError) as err:
        SearchSpace.default("pretrain").narrowed(parse_overrides(overrides)).validate()
    assert message in str(err.value)


def test_a_space_with_nothing_left_to_search_is_empty() -> None:
    fixed = [f"{name}={dim.corners()[0]}" for name, dim in SearchSpace.default("pretrain").dims]
    with pytest.raises(SpaceError, match="the search space is empty"):
        SearchSpace.default("pretrain").narrowed(parse_overrides(fixed)).validate()


def test_samples_stay_in_bounds_and_apply_to_the_config() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.default("pretrain")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        params = space.sample(trial)
        assert 1e-4 <= params["lr"] <= 3e-2 and 0 <= params["dropout"] <= 0.5
        assert params["backbone"] in dict(space.dims)["backbone"].choices  # type: ignore[union-attr]
        config = apply_params(_base(), params)
        assert config.optim.lr == params["lr"] and config.optim.weight_decay == params["weight_decay"]
        assert config.optim.batch_size == params["batch_size"] and config.optim.aggregate == params["aggregate"]
        assert config.model.backbone == params["backbone"] and config.crop_s == params["crop_s"]
        assert config.model.kwargs == {"ps": params["dropout"], "width": params["width"]}
        study.tell(trial, 0.5)


def test_the_space_is_checked_against_the_base_config() -> None:
    from ecgml.tune.study import check_spec

    spec = TuneSpec(stage="pretrain", space=SearchSpace.default("pretrain"), base=_base(seconds=3.0), n_trials=2)
    with pytest.raises(SpaceError, match=r"crop of 5\.0 s is longer than the 3\.0 s records"):
        check_spec(spec)


def test_train_config_round_trips_through_json() -> None:
    config = apply_params(_base(), {"lr": 3e-3, "width": 0.5, "dropout": 0.2})
    assert config_from_json(config.to_json()) == config
    spec = TuneSpec(stage="pretrain", space=SearchSpace.default("pretrain"), base=config, n_trials=3, tags={"a": "b"})
    assert TuneSpec.from_json(spec.to_json()) == spec


def test_one_text_may_hold_several_overrides() -> None:
    """An MLproject parameter is one string: ``--space "lr=1e-3:1e-2;width=0.25,0.5"`` (empty is nothing)."""
    assert parse_overrides(["lr=1e-3:1e-2; width=0.25,0.5", "", "aggregate=max"]) == {
        "lr": "1e-3:1e-2", "width": "0.25,0.5", "aggregate": "max"}
