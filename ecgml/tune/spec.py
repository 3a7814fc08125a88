"""What a study is: stage, search space, base training config, pruner, sampler, tags and parent run, stored as a
study user attribute so any worker (another process, another machine, a resumed run) needs only the storage
and the study name to take part, and optuna-dashboard shows it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ecgml.tune.space import SearchSpace, Stage

if TYPE_CHECKING:
    import optuna

    from ecgml.train.pipeline import TrainConfig

SPEC_ATTR = "ecgml.tune"
PRUNERS: tuple[str, ...] = ("median", "hyperband", "none")
SAMPLERS: tuple[str, ...] = ("tpe", "random")
PrunerKind = Literal["median", "hyperband", "none"]


class StudyError(ValueError):
    """A study that cannot be created, found, resumed or joined as asked."""


def config_from_json(doc: dict[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from its ``to_json()`` form (the inverse, checked by a round-trip test)."""
    from ecgml.config import DataConfig, PrepareConfig
    from ecgml.train.loop import OptimConfig
    from ecgml.train.pipeline import ModelConfig, TrainConfig

    doc = json.loads(json.dumps(doc))
    prep = doc.pop("data")
    raw = prep.pop("data")
    data = DataConfig(**{**raw, "root": Path(raw["root"])})
    prepare = PrepareConfig(data=data, **{**prep, "cache_dir": Path(prep["cache_dir"])})
    model = ModelConfig(**doc.pop("model"))
    optim = OptimConfig(**doc.pop("optim"))
    return TrainConfig(data=prepare, model=model, optim=optim, **{**doc, "runs_dir": Path(doc["runs_dir"])})


@dataclass(frozen=True)
class TuneSpec:
    """Everything every worker of a study must agree on."""

    stage: Stage
    space: SearchSpace
    base: TrainConfig
    n_trials: int
    pruner: PrunerKind = "median"
    #: Median pruner: trials finished before pruning starts, and epochs reported before a trial can be pruned.
    pruner_startup_trials: int = 3
    pruner_warmup_epochs: int = 1
    sampler: str = "tpe"
    seed: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    #: Register the best trial's model under this name when the study ends ("" = do not).
    register_as: str = ""
    parent_run_id: str | None = None

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise StudyError(f"a study needs at least one trial, not {self.n_trials}")
        if self.pruner not in PRUNERS:
            raise StudyError(f"unknown pruner {self.pruner!r}; choose one of {', '.join(PRUNERS)}")
        if self.sampler not in SAMPLERS:
            raise StudyError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")

    @property
    def experiment(self) -> str:
        return self.base.experiment

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "space": self.space.to_json(), "base": self.base.to_json(),
                "n_trials": self.n_trials, "pruner": self.pruner, "pruner_startup_trials": self.pruner_startup_trials,
                "pruner_warmup_epochs": self.pruner_warmup_epochs, "sampler": self.sampler, "seed": self.seed,
                "tags": dict(self.tags), "register_as": self.register_as, "parent_run_id": self.parent_run_id}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TuneSpec:
        return cls(**{**doc, "space": SearchSpace.from_json(doc["space"]), "base": config_from_json(doc["base"])})

    @classmethod
    def from_study(cls, study: optuna.Study) -> TuneSpec:
        doc = study.user_attrs.get(SPEC_ATTR)
        if doc is None:
            raise StudyError(f"study {study.study_name!r} was not created by `ecgml tune` (no {SPEC_ATTR} attribute)")
        return cls.from_json(doc)

    def save(self, study: optuna.Study) -> None:
        study.set_user_attr(SPEC_ATTR, self.to_json())

    def with_(self, **changes: Any) -> TuneSpec:
        return replace(self, **changes)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """Pruning from per-epoch validation macro AUC (one report per epoch; epochs are the resource)."""
        import optuna

        if self.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=self.pruner_startup_trials,
                                               n_warmup_steps=self.pruner_warmup_epochs)
        if self.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=self.base.optim.epochs,
                                                  reduction_factor=3)
        return optuna.pruners.NopPruner()

    def make_sampler(self, worker_index: int) -> optuna.samplers.BaseSampler:
        """Each worker gets its own seed (the same seed would propose the same first trials in every worker)."""
        import warnings

        import optuna

        seed = self.seed * 1000 + worker_index
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant_liar is experimental
            # constant_liar: running trials count as bad guesses, so parallel workers do not all sample one spot
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                              n_startup_trials=max(2, min(10, self.n_trials // 3)))
